"""Paste-back of edited crops: the feathered mask and the warp against brute-force NumPy, the inverse
of `crop_image`, a hand-worked blend, and the visible synthetic label."""

import math

import numpy as np
import pytest

from tfvgan_jax.prep.composite import feathered_mask, label_synthetic, paste_back
from tfvgan_jax.prep.crop import CropBox, crop_image, crop_to_source


def disk(size, radius, centre=None):
  """[size, size] bool, pixel centres (+0.5) within `radius` of `centre` (default the middle)."""
  cx, cy = (size / 2, size / 2) if centre is None else centre
  y, x = np.mgrid[:size, :size] + 0.5
  return (x - cx)**2 + (y - cy)**2 <= radius**2


def smooth_frame(height, width, seed=0):
  """[H, W, 3] uint8 of slowly varying colour, so bilinear resampling errs by little."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:height, :width] / 40.0
  phases = rng.uniform(0, 2 * np.pi, (3, 2))
  channels = [127.5 + 100 * np.sin(x + p[0]) * np.cos(0.7 * y + p[1]) for p in phases]
  return np.stack(channels, -1).round().astype(np.uint8)


def brute_feather(mask, feather):
  """The construction of `feathered_mask` written out pixel by pixel over a zero-padded mask."""
  r = math.ceil(feather)
  size = mask.shape[0]
  padded = np.pad(mask.astype(np.float64), 2 * r)
  eroded = np.zeros_like(padded)
  for j in range(r, padded.shape[0] - r):
    for i in range(r, padded.shape[1] - r):
      eroded[j, i] = padded[j - r:j + r + 1, i - r:i + r + 1].min()
  taps = np.arange(-r, r + 1)
  weights = np.exp(-taps[:, None]**2 / (2 * (feather / 2)**2) - taps[None, :]**2 / (2 * (feather / 2)**2))
  weights /= weights.sum()
  out = np.zeros((size, size))
  for j in range(size):
    for i in range(size):
      out[j, i] = np.sum(eroded[j + r:j + 3 * r + 1, i + r:i + 3 * r + 1] * weights)
  return out


def brute_paste(frame, crop, affine, mask):
  """paste_back pixel by pixel: invert the affine per pixel centre, bilinear with clamped neighbours."""
  size = crop.shape[0]
  inverse = np.linalg.inv(np.vstack([affine, [0, 0, 1]]))
  out = frame.astype(np.float64).copy()

  def sample(image, u, v):
    fx, fy = u - 0.5, v - 0.5
    i, j = math.floor(fx), math.floor(fy)
    ax, ay = fx - i, fy - j
    at = lambda jj, ii: image[min(max(jj, 0), size - 1), min(max(ii, 0), size - 1)].astype(np.float64)
    return ((1 - ay) * ((1 - ax) * at(j, i) + ax * at(j, i + 1)) +
            ay * ((1 - ax) * at(j + 1, i) + ax * at(j + 1, i + 1)))

  for y in range(frame.shape[0]):
    for x in range(frame.shape[1]):
      u, v, _ = inverse @ [x + 0.5, y + 0.5, 1.0]
      if 0 <= u < size and 0 <= v < size:
        m = sample(mask, u, v)
        out[y, x] = out[y, x] * (1 - m) + sample(crop, u, v) * m
  return np.rint(out).astype(np.uint8)


@pytest.mark.parametrize("feather", [1.0, 2.5])
def test_feathered_mask_matches_brute_force(feather):
  rng = np.random.default_rng(1)
  mask = disk(20, 7).astype(np.float32) * rng.uniform(0.6, 1.0, (20, 20)).astype(np.float32)
  mask[3:6, 14:20] = 1.0  # touches the crop's edge
  np.testing.assert_allclose(feathered_mask(mask, feather), brute_feather(mask, feather), atol=1e-5)


def test_feathered_mask_properties():
  mask = disk(64, 24)
  mask[28:36, 50:] = True  # a bar out to the right edge
  soft = feathered_mask(mask, 4.0)
  assert soft.dtype == np.float32 and soft.shape == (64, 64)
  assert np.all(soft <= mask) and soft.min() == 0.0  # never above the mask: 0 outside it
  assert np.all(soft[:, -1] == 0)  # the crop's edge counts as outside
  # Exactly 1 where the mask is 1 over the (4r + 1) square, r = 4.
  core = np.array([[mask[max(j - 8, 0):j + 9, max(i - 8, 0):i + 9].all() and 8 <= j < 56 and 8 <= i < 56
                    for i in range(64)] for j in range(64)])
  assert core.sum() > 100 and np.all(soft[core] == pytest.approx(1.0, abs=1e-6))
  # The ramp is monotone from the border inwards along a row through the middle.
  row = soft[32, 8:33]
  assert np.all(np.diff(row) >= -1e-6) and 0 < row[8] < 1
  hard = feathered_mask(mask, 0)
  assert hard.dtype == np.float32 and np.array_equal(hard, mask.astype(np.float32))
  with pytest.raises(ValueError, match="feather"):
    feathered_mask(mask, -1)


def test_paste_back_hand_case():
  frame = np.zeros((4, 4, 3), np.uint8)
  crop = np.full((2, 2, 3), 200, np.uint8)
  mask = np.array([[1.0, 0.5], [0.25, 0.0]], np.float32)  # [v, u]
  out = paste_back(frame, crop, crop_to_source(CropBox(1, 1, 2), 2), mask)
  expected = np.zeros((4, 4), np.uint8)
  expected[1, 1], expected[1, 2], expected[2, 1] = 200, 100, 50  # [y, x]
  np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=2))
  assert frame.max() == 0  # the input is left as it was


def test_paste_back_matches_brute_force_for_any_affine():
  rng = np.random.default_rng(2)
  frame = rng.integers(0, 256, (22, 26, 3), dtype=np.uint8)
  crop = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
  mask = rng.uniform(0, 1, (8, 8)).astype(np.float32)
  mask[:2], mask[:, 6:] = 0, 0  # only the support's bounding box is computed: it must reach far enough
  angle, scale = 0.4, 1.7  # rotated and enlarged, partly off the frame's right edge
  affine = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 17.3],
                     [scale * np.sin(angle), scale * np.cos(angle), 2.6]])
  out = paste_back(frame, crop, affine, mask)
  expected = brute_paste(frame, crop, affine, mask)
  assert np.abs(out.astype(int) - expected).max() <= 1  # the warped crop is rounded to uint8 first
  assert np.mean(out != expected) < 0.2


def assert_only_region_changed(out, before, rows: slice, cols: slice):
  untouched = np.ones(before.shape[:2], bool)
  untouched[rows, cols] = False
  np.testing.assert_array_equal(out[untouched], before[untouched])


def test_paste_back_inverts_crop_image():
  frame = smooth_frame(96, 128)
  other = np.random.default_rng(3).integers(0, 256, frame.shape, dtype=np.uint8)
  ones = np.ones((40, 40), np.float32)
  # Not resized: the box comes back exactly, everything else stays as it was.
  box = CropBox(30, 20, 40)
  out = paste_back(other, crop_image(frame, box, 40), crop_to_source(box, 40), ones)
  np.testing.assert_array_equal(out[20:60, 30:70], frame[20:60, 30:70])
  assert_only_region_changed(out, other, slice(20, 60), slice(30, 70))
  # Resized (80 source pixels to 40): back to interpolation error.
  box = CropBox(24, 8, 80)
  out = paste_back(other, crop_image(frame, box, 40), crop_to_source(box, 40), ones)
  error = np.abs(out[8:88, 24:104].astype(int) - frame[8:88, 24:104])
  assert error.mean() < 2.0 and np.percentile(error, 99) < 8
  assert_only_region_changed(out, other, slice(8, 88), slice(24, 104))
  # A box partly outside the frame: the part inside comes back, nothing else changes.
  box = CropBox(100, -15, 40)
  out = paste_back(other, crop_image(frame, box, 40), crop_to_source(box, 40), ones)
  np.testing.assert_array_equal(out[0:25, 100:128], frame[0:25, 100:128])
  assert_only_region_changed(out, other, slice(0, 25), slice(100, 128))
  # Wholly outside: the frame, unchanged.
  box = CropBox(200, 0, 40)
  np.testing.assert_array_equal(paste_back(other, crop_image(frame, box, 40), crop_to_source(box, 40), ones), other)


def test_paste_back_with_a_feathered_mask_blends_smoothly():
  frame = np.zeros((64, 64, 3), np.uint8)
  crop = np.full((32, 32, 3), 255, np.uint8)
  mask = feathered_mask(disk(32, 12), 3.0)
  out = paste_back(frame, crop, crop_to_source(CropBox(16, 16, 32), 32), mask)
  np.testing.assert_array_equal(out[16:48, 16:48, 0], np.rint(255 * mask).astype(np.uint8))
  assert out[:16].max() == 0 and out[48:].max() == 0
  with pytest.raises(ValueError, match="mask must be"):
    paste_back(frame, crop, crop_to_source(CropBox(16, 16, 32), 32), np.ones((16, 16)))


@pytest.mark.parametrize("position", ["bottom-right", "top-left"])
def test_label_changes_only_its_corner(position):
  frame = np.full((512, 512, 3), 128, np.uint8)
  labelled = label_synthetic(frame, position=position)
  assert labelled.shape == frame.shape and labelled.dtype == np.uint8
  assert np.all(frame == 128)  # the input is left as it was
  changed = np.any(labelled != frame, axis=2)
  rows, cols = np.nonzero(changed)
  assert changed.sum() > 500
  if position == "bottom-right":
    assert rows.min() >= 384 and cols.min() >= 256
  else:
    assert rows.max() < 128 and cols.max() < 256
  assert 0.03 * 512 <= rows.max() - rows.min() + 1 <= 0.1 * 512  # sized by the frame height
  assert labelled[changed].max() == 255  # white text on a black box
  with pytest.raises(ValueError, match="position"):
    label_synthetic(frame, position="middle")
