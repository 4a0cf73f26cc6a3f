"""Occluders: the hand region, its smoothing over time, the optional hand models."""

import numpy as np
import pytest

from tfvgan_jax.prep import landmarks, model_files, occluders


def open_hand(centre=(60.0, 60.0), size=40.0):
  """[21, 2] points of an upright open hand (wrist at the bottom), `size` pixels tall."""
  x0, y0 = centre
  wrist = [(x0, y0 + size / 2)]
  fingers = []
  for k, dx in enumerate((-0.45, -0.2, 0.0, 0.2, 0.4)):
    for j in range(1, 5):
      fingers.append((x0 + dx * size * (0.6 + 0.1 * j), y0 + size / 2 - size * 0.25 * j))
  return np.asarray(wrist + fingers, np.float32)


def test_hand_mask_covers_the_hand_and_a_margin_beyond_it():
  points = open_hand()
  mask = occluders.hand_mask([points], 128, 128, dilation=0.12)
  assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0.0, 1.0}
  rows, cols = np.nonzero(mask)
  span = points.max(axis=0) - points.min(axis=0)
  # Every point inside, and the region reaches about 0.12 x the hand's size beyond the points.
  assert all(mask[int(y), int(x)] == 1 for x, y in points)
  assert cols.min() < points[:, 0].min() - 2 and rows.max() > points[:, 1].max() + 2
  assert cols.max() - cols.min() < span[0] + 0.3 * span.max() + 2
  assert occluders.hand_mask([], 16, 16).sum() == 0


def test_occlusion_is_held_over_a_missed_frame_and_then_fades():
  seen = iter([True, False, False, False, False, False])
  square = np.zeros((32, 32), np.float32)
  square[8:24, 8:24] = 1
  tracker = occluders.OcclusionTracker([lambda image: square if next(seen) else np.zeros_like(square)], hold=0.6,
                                       feather=0)
  image = np.zeros((32, 32, 3), np.uint8)
  peaks = [None if (m := tracker(image)) is None else float(m.max()) for _ in range(6)]
  assert peaks[0] == 1.0 and peaks[1] == pytest.approx(0.6) and peaks[2] == pytest.approx(0.36)
  assert peaks[-1] is None  # faded out


def test_hand_region_points_from_the_wrist_to_the_fingers():
  palm = occluders.Palm(np.array([40, 40, 80, 80], np.float32),
                        np.array([[60, 80], [0, 0], [60, 45], [0, 0], [0, 0], [0, 0], [0, 0]], np.float32), 0.9)
  region = occluders.hand_region(palm)
  assert region.rotation == pytest.approx(0.0, abs=1e-6)  # upright hand: no turn
  np.testing.assert_allclose(region.center, [60, 40])  # moved half the box toward the fingers
  assert region.size == pytest.approx(2.6 * 40)
  turned = occluders.hand_region(palm._replace(keypoints=palm.keypoints[:, ::-1].copy()))
  assert isinstance(turned, landmarks.RegionOfInterest) and abs(turned.rotation) == pytest.approx(np.pi / 2, abs=0.05)


def test_a_missing_hand_model_turns_the_source_off_with_a_reason(tmp_path):
  made, missing = occluders.make_occluders(["hands"], {"palm": tmp_path / "no.tflite", "hand": tmp_path / "no2.tflite"})
  assert made == [] and "palm_detection_full.tflite and hand_landmark_full.tflite not found" in missing[0]
  assert model_files.FETCH_COMMAND in missing[0]
  with pytest.raises(ValueError, match="--occluders=mic: unknown occluder source \\(known: hands"):
    occluders.make_occluders(["mic"])


def test_the_hand_models_find_no_hand_in_a_face_picture(astronaut):
  made, missing = occluders.make_occluders(["hands"])
  if missing:
    pytest.skip(missing[0])
  (hands,) = made
  assert hands.points(np.zeros((120, 160, 3), np.uint8)) == []
  assert hands(astronaut).shape == astronaut.shape[:2]
