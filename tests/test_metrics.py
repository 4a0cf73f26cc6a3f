"""tfvgan_jax.metrics against brute-force NumPy computations: SSIM (Wang et al. 2004) and E_tmp."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfvgan_jax import metrics

# Compiled once per shape: op-by-op dispatch of the convolutions and the warp is slower than this.
ssim_per_sample = jax.jit(metrics.ssim_per_sample, static_argnames="filter_size")
warping_error_per_sample = jax.jit(metrics.temporal_warping_error_per_sample)
warping_error = jax.jit(metrics.temporal_warping_error)


def brute_force_ssim(x, y, max_value=1.0, filter_size=11, sigma=1.5, k1=0.01, k2=0.03):
  """[B] mean SSIM in float64, one window position at a time, 'valid' positions only."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  _, height, width, _ = x.shape
  size = min(filter_size, height, width)
  offsets = np.arange(size) - (size - 1) / 2
  window = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma ** 2))
  window /= window.sum()
  c1 = (k1 * max_value) ** 2
  c2 = (k2 * max_value) ** 2
  results = []
  for xb, yb in zip(x, y):
    values = []
    for i in range(height - size + 1):
      for j in range(width - size + 1):
        for c in range(x.shape[-1]):
          px = xb[i:i + size, j:j + size, c]
          py = yb[i:i + size, j:j + size, c]
          mu_x = np.sum(window * px)
          mu_y = np.sum(window * py)
          var_x = np.sum(window * (px - mu_x) ** 2)
          var_y = np.sum(window * (py - mu_y) ** 2)
          cov = np.sum(window * (px - mu_x) * (py - mu_y))
          values.append((2 * mu_x * mu_y + c1) * (2 * cov + c2)
                        / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)))
    results.append(np.mean(values))
  return np.asarray(results)


def random_pair(shape, seed=0, noise=0.1):
  """x uniform in [0, 1] and y = x plus clipped Gaussian noise, so that SSIM is well inside (0, 1)."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=shape).astype(np.float32)
  y = np.clip(x + rng.normal(scale=noise, size=shape), 0.0, 1.0).astype(np.float32)
  return x, y


# SSIM.


def test_ssim_matches_brute_force():
  x, y = random_pair((2, 16, 16, 3))
  np.testing.assert_allclose(ssim_per_sample(x, y), brute_force_ssim(x, y), atol=1e-5)
  np.testing.assert_allclose(metrics.ssim(x, y), brute_force_ssim(x, y).mean(), atol=1e-5)


def test_ssim_matches_brute_force_with_other_parameters():
  x, y = random_pair((1, 14, 17, 2), seed=1, noise=0.3)
  got = ssim_per_sample(x * 255.0, y * 255.0, max_value=255.0, filter_size=7, filter_sigma=1.0, k1=0.02, k2=0.05)
  want = brute_force_ssim(x * 255.0, y * 255.0, max_value=255.0, filter_size=7, sigma=1.0, k1=0.02, k2=0.05)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_ssim_shrinks_the_filter_on_small_images():
  x, y = random_pair((2, 8, 8, 3), seed=2)
  # An 8 x 8 window leaves a single position; an unshrunk 11 x 11 one would leave none.
  np.testing.assert_allclose(ssim_per_sample(x, y), brute_force_ssim(x, y, filter_size=8), atol=1e-5)
  x, y = random_pair((1, 9, 12, 1), seed=3)
  np.testing.assert_allclose(ssim_per_sample(x, y), brute_force_ssim(x, y, filter_size=9), atol=1e-5)


def test_ssim_identity_and_symmetry():
  x, y = random_pair((3, 16, 16, 3), seed=4, noise=0.2)
  np.testing.assert_allclose(ssim_per_sample(x, x), np.ones(3), atol=1e-6)
  np.testing.assert_allclose(ssim_per_sample(x, y), ssim_per_sample(y, x), atol=1e-7)
  assert np.all(np.asarray(ssim_per_sample(x, y)) < 0.99)


def test_ssim_decreases_with_a_constant_offset():
  x = np.random.default_rng(5).uniform(0.0, 0.6, size=(1, 16, 16, 3)).astype(np.float32)
  offsets = [0.0, 0.05, 0.1, 0.2, 0.4]
  values = np.asarray([float(ssim_per_sample(x, x + d)[0]) for d in offsets])
  assert values[0] == pytest.approx(1.0, abs=1e-6)
  assert np.all(np.diff(values) < 0), values
  # A pure offset leaves the structure term at 1: only the luminance term moves.
  np.testing.assert_allclose(values[-1], brute_force_ssim(x, x + 0.4)[0], atol=1e-5)


def test_ssim_is_invariant_to_the_range_when_max_value_follows():
  x, y = random_pair((2, 12, 12, 3), seed=6)
  np.testing.assert_allclose(ssim_per_sample(x * 255.0, y * 255.0, max_value=255.0), ssim_per_sample(x, y), atol=1e-5)


def test_ssim_matches_skimage():
  skimage_metrics = pytest.importorskip("skimage.metrics")
  # skimage filters the whole image with reflection and then crops (win_size - 1) / 2 = 5 pixels
  # per side; with truncate=3.5 its window is 11 taps at sigma 1.5, so the kept positions are
  # exactly the 'valid' ones.
  x, y = random_pair((2, 20, 18, 3), seed=7)
  want = [skimage_metrics.structural_similarity(
      xb, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)
          for xb, yb in zip(x.astype(np.float64), y.astype(np.float64))]
  np.testing.assert_allclose(ssim_per_sample(x, y), want, atol=1e-5)


# Temporal warping error.


def test_warping_error_is_zero_for_identical_frames_and_zero_flow():
  frame = np.random.default_rng(8).uniform(size=(2, 6, 7, 3)).astype(np.float32)
  flow = np.zeros((2, 6, 7, 2), np.float32)
  mask = np.ones((2, 6, 7), bool)
  np.testing.assert_allclose(warping_error_per_sample(frame, frame, flow, mask), [0.0, 0.0], atol=1e-12)
  assert float(warping_error(frame, frame, flow, mask)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
def test_warping_error_vanishes_for_a_one_pixel_translation(axis):
  """warp samples prev at q + flow(q): flow +1 along x makes the warp read the pixel to the right."""
  rng = np.random.default_rng(9)
  height, width = 6, 7
  prev = rng.uniform(size=(1, height, width, 3)).astype(np.float32)
  current = rng.uniform(size=(1, height, width, 3)).astype(np.float32)
  interior = np.zeros((1, height, width), bool)
  flow = np.zeros((1, height, width, 2), np.float32)
  flow[..., axis] = 1.0
  if axis == 0:  # Content moved left by a pixel: current(x) = prev(x + 1).
    current[:, :, :-1] = prev[:, :, 1:]
    interior[:, :, :-1] = True
    edge = (current[:, :, -1] - prev[:, :, -1]) ** 2  # The last column reads the clamped border.
  else:  # Content moved up by a pixel: current(y) = prev(y + 1).
    current[:, :-1] = prev[:, 1:]
    interior[:, :-1] = True
    edge = (current[:, -1] - prev[:, -1]) ** 2
  assert float(warping_error_per_sample(current, prev, flow, interior)[0]) == pytest.approx(0.0, abs=1e-10)
  full = np.ones_like(interior)
  want = edge.sum() / (height * width * 3)
  assert float(warping_error_per_sample(current, prev, flow, full)[0]) == pytest.approx(want, rel=1e-5)
  # The opposite sign misaligns the frames.
  assert float(warping_error_per_sample(current, prev, -flow, interior)[0]) > 1e-2


def test_warping_error_matches_integer_shifts_in_numpy():
  rng = np.random.default_rng(10)
  batch, height, width, channels = 2, 5, 6, 3
  prev = rng.uniform(size=(batch, height, width, channels)).astype(np.float32)
  current = rng.uniform(size=(batch, height, width, channels)).astype(np.float32)
  flow = rng.integers(-2, 3, size=(batch, height, width, 2)).astype(np.float32)
  mask = rng.uniform(size=(batch, height, width)) < 0.6
  want = []
  for b in range(batch):
    errors = []
    for i in range(height):
      for j in range(width):
        if mask[b, i, j]:
          # Integer flows land on pixel centres; out-of-image reads take the nearest border pixel.
          si = np.clip(i + int(flow[b, i, j, 1]), 0, height - 1)
          sj = np.clip(j + int(flow[b, i, j, 0]), 0, width - 1)
          errors.extend((current[b, i, j] - prev[b, si, sj]) ** 2)
    want.append(np.mean(errors))
  np.testing.assert_allclose(warping_error_per_sample(current, prev, flow, mask), want, rtol=1e-5)
  np.testing.assert_allclose(warping_error(current, prev, flow, mask), np.mean(want), rtol=1e-5)


def test_warping_error_constant_difference_and_empty_masks():
  rng = np.random.default_rng(11)
  prev = rng.uniform(0.0, 0.5, size=(3, 4, 5, 3)).astype(np.float32)
  differences = np.asarray([0.1, 0.3, 0.2], np.float32)
  current = prev + differences[:, None, None, None]
  flow = np.zeros((3, 4, 5, 2), np.float32)
  mask = rng.uniform(size=(3, 4, 5)) < 0.5
  mask[:2, 0, 0] = True
  mask[2] = False
  per_sample = warping_error_per_sample(current, prev, flow, mask)
  np.testing.assert_allclose(per_sample, [0.01, 0.09, 0.0], rtol=1e-5, atol=1e-12)
  # The empty sample is left out of the mean rather than counted as 0.
  assert float(warping_error(current, prev, flow, mask)) == pytest.approx(0.05, rel=1e-5)
  assert float(warping_error(current, prev, flow, np.zeros_like(mask))) == 0.0


def test_to_unit_range():
  images = np.asarray([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.25], np.float32)
  np.testing.assert_allclose(metrics.to_unit_range(images), [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
