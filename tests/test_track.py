"""Tracking, smoothing and the stable crop, with a scripted detector and landmark model.

The fakes read the frame number from the image and answer from a script, so each test states
exactly when a face is seen, where it is and when it is lost; the real models are exercised in
test_detect.py and test_build.py.
"""

import numpy as np
import pytest

from tfvgan_jax.prep import crop, topology, track
from tfvgan_jax.prep.detect import Detection
from tfvgan_jax.prep.landmarks import MeshResult
from tfvgan_jax.prep.video import Frame


def face_points(centre, size, seed=0):
  """[468, 3] points in a box of `size` around `centre`, eyes level (corners where the topology says)."""
  rng = np.random.default_rng(seed)
  points = np.zeros((468, 3), np.float32)
  points[:, :2] = centre + (rng.random((468, 2)) - 0.5) * size
  for index, x in ((topology.IBUG68_FROM_MESH[36], -0.3), (topology.IBUG68_FROM_MESH[45], 0.3)):
    points[index, :2] = centre + np.array([x, -0.1]) * size
  return points


class Scripted:
  """A video where face k is at centres[k][t] (None: absent) with a side of `size` pixels."""

  def __init__(self, centres, size=100.0, frame_size=(400, 300)):
    self.centres, self.size, self.frame_size = centres, size, frame_size
    self.detector_calls, self.landmark_calls = [], 0

  def frames(self):
    for t in range(len(self.centres[0])):
      yield Frame(t, t / 25, np.full((self.frame_size[1], self.frame_size[0], 3), t % 256, np.uint8))

  def _faces(self, t):
    return [(k, np.asarray(c[t], np.float32)) for k, c in enumerate(self.centres) if c[t] is not None]

  def detector(self, image):
    t = int(image[0, 0, 0])
    self.detector_calls.append(t)
    out = []
    for k, centre in self._faces(t):
      points = face_points(centre, self.size, k)
      keypoints = np.zeros((6, 2), np.float32)
      keypoints[0], keypoints[1] = points[topology.IBUG68_FROM_MESH[36], :2], points[topology.IBUG68_FROM_MESH[45], :2]
      box = np.concatenate([centre - self.size / 2, centre + self.size / 2]).astype(np.float32)
      out.append(Detection(box=box, keypoints=keypoints, score=0.9))
    return out

  def landmarker(self, image, roi):
    self.landmark_calls += 1
    t = int(image[0, 0, 0])
    for k, centre in self._faces(t):
      if np.linalg.norm(centre - roi.center) < self.size / 2:
        return MeshResult(points=face_points(centre, self.size, k), score=0.99)
    return MeshResult(points=np.zeros((468, 3), np.float32), score=0.01)


def moving(num_frames, start=(150.0, 150.0), velocity=(2.0, 0.5)):
  return [np.asarray(start) + t * np.asarray(velocity) for t in range(num_frames)]


def test_one_face_is_followed_between_detections():
  video = Scripted([moving(30)])
  tracks, seen = track.track_faces(video.frames(), video.detector, video.landmarker, track.TrackConfig(detect_every=10))
  assert seen == 30 and len(tracks) == 1
  assert video.detector_calls == [0, 10, 20]
  main = track.main_track(tracks)
  np.testing.assert_array_equal(main.frames, np.arange(30))
  np.testing.assert_allclose(main.points[7], face_points(moving(30)[7], 100.0), atol=1e-5)


def test_lost_face_ends_the_track_and_is_found_again():
  centres = moving(30)
  centres[12] = centres[13] = None
  video = Scripted([centres])
  tracks, _ = track.track_faces(video.frames(), video.detector, video.landmarker, track.TrackConfig(detect_every=10))
  runs = sorted((int(t.frames[0]), int(t.frames[-1])) for t in tracks)
  assert runs == [(0, 11), (14, 29)]
  assert 13 in video.detector_calls and 14 in video.detector_calls  # searched again right after the loss
  main = track.main_track(tracks)
  assert (main.frames[0], main.frames[-1]) == (14, 29)
  assert np.all(np.diff(main.frames) == 1)


def test_a_face_found_again_is_joined_and_another_face_is_not():
  # Face A lost for frames 12-16, face B appears at x = 320 from frame 20 while A is still there.
  a = moving(40, velocity=(1.0, 0.0))
  for t in range(12, 17):
    a[t] = None
  b = [None] * 20 + moving(20, start=(320.0, 150.0), velocity=(0.0, 0.0))
  video = Scripted([a, b])
  tracks, _ = track.track_faces(video.frames(), video.detector, video.landmarker, track.TrackConfig(detect_every=5))
  assert sorted((int(t.frames[0]), int(t.frames[-1])) for t in tracks) == [(0, 11), (17, 39), (22, 39)]  # B: at the next detection
  assert track.join_tracks(tracks, 0) == tracks
  assert len(track.join_tracks(tracks, 4)) == 3  # the gap is 5 frames
  joined = track.join_tracks(tracks, 5)
  assert sorted(len(t) for t in joined) == [18, 35]
  main = track.main_track(joined)
  np.testing.assert_array_equal(main.frames, np.r_[0:12, 17:40])
  assert np.all(track.box_of_points(main.points)[:, 2] < 260)  # B (overlapping in time) was not joined
  assert [(r.start, r.stop) for r in track.runs(main.frames)] == [(0, 12), (12, 35)]
  # A face found again elsewhere in the frame is another face.
  far = moving(12) + [None] * 3 + moving(10, start=(330.0, 150.0), velocity=(0.0, 0.0))
  video = Scripted([far])
  tracks, _ = track.track_faces(video.frames(), video.detector, video.landmarker, track.TrackConfig())
  assert len(track.join_tracks(tracks, 50)) == 2


def test_main_track_is_the_longest_and_faces_are_not_swapped():
  second = [None] * 10 + moving(20, start=(300.0, 150.0), velocity=(0.0, 0.0))
  video = Scripted([moving(30, velocity=(0.5, 0.0)), second])
  tracks, _ = track.track_faces(video.frames(), video.detector, video.landmarker,
                                track.TrackConfig(detect_every=5, max_faces=2))
  assert sorted(len(t) for t in tracks) == [20, 30]
  main = track.main_track(tracks)
  assert len(main) == 30
  assert np.all(track.box_of_points(main.points)[:, 2] < 260)  # never jumped to the face at x = 300


def test_max_faces_limits_landmark_calls():
  video = Scripted([moving(10), moving(10, start=(300.0, 150.0))])
  tracks, _ = track.track_faces(video.frames(), video.detector, video.landmarker, track.TrackConfig(max_faces=1))
  assert len(tracks) == 1 and video.landmark_calls == 10


def test_gaussian_smoothing_keeps_constants_and_lines_and_cuts_noise():
  assert track.gaussian_weights(0.0).tolist() == [1.0]
  taps = track.gaussian_weights(1.5)
  assert taps.sum() == pytest.approx(1.0) and len(taps) == 2 * 5 + 1
  constant = np.full((20, 4, 3), 7.0)
  np.testing.assert_allclose(track.smooth_points(constant, 2.0), constant, rtol=1e-6)
  line = np.arange(40, dtype=np.float64)[:, None] * np.array([1.0, -2.0])
  smoothed = track.smooth_points(line, 1.0)
  np.testing.assert_allclose(smoothed[3:-3], line[3:-3], atol=1e-4)  # symmetric taps: no lag
  noise = np.random.default_rng(0).normal(size=(4000, 2))
  ratio = track.smooth_points(noise, 1.0).std() / noise.std()
  assert ratio == pytest.approx(np.sqrt(np.sum(track.gaussian_weights(1.0) ** 2)), rel=0.05)
  np.testing.assert_array_equal(track.smooth_points(noise[:50], 0.0), noise[:50].astype(np.float32))
  with pytest.raises(ValueError, match="sigma"):
    track.smooth_points(noise, -1.0)


def grid_face(side=100.0, n=5):
  """[n*n, 2] points on a square of `side` px: a face whose box side is `side`."""
  u = np.linspace(0.0, side, n)
  return np.stack(np.meshgrid(u, u), -1).reshape(-1, 2) + 50.0


def test_landmark_speed_is_in_face_sizes_per_frame():
  shift = np.array([3.0, 4.0])  # 5 px per frame
  points = grid_face(100.0)[None] + np.arange(12)[:, None, None] * shift
  np.testing.assert_allclose(track.landmark_speed(points), 0.05)
  np.testing.assert_allclose(track.landmark_speed(np.repeat(grid_face()[None], 6, 0)), 0.0)
  assert track.landmark_speed(grid_face()[None]).tolist() == [0.0]


def brute_force_adaptive(points, sigma, half_speed):
  """Frame by frame: the speed from finite differences of the fixed-Gaussian track, then a
  renormalized Gaussian of that frame's own width over the frames that exist."""
  base = track.smooth_points(points, sigma).astype(np.float64)
  count, radius = len(points), int(np.ceil(3 * sigma))
  out = np.zeros_like(np.asarray(points, np.float64))
  for t in range(count):
    lo, hi = max(t - 1, 0), min(t + 1, count - 1)
    velocity = (base[hi] - base[lo]) / (hi - lo)
    extent = base[t].max(0) - base[t].min(0)
    speed = np.median(np.linalg.norm(velocity, axis=-1)) / extent.max()
    width = sigma / (1 + speed / half_speed)
    total, norm = 0.0, 0.0
    for k in range(-radius, radius + 1):
      if 0 <= t + k < count:
        w = np.exp(-0.5 * (k / width) ** 2)
        total, norm = total + w * points[t + k], norm + w
    out[t] = total / norm
  return out


def test_motion_adaptive_smoothing_matches_a_frame_by_frame_computation():
  rng = np.random.default_rng(1)
  steps = np.where(np.arange(30) < 15, 0.0, 6.0)  # still, then 6 px per frame
  points = grid_face()[None] + np.cumsum(steps)[:, None, None] * np.array([1.0, 0.0]) + rng.normal(0, 0.5, (30, 25, 2))
  np.testing.assert_allclose(track.motion_adaptive_smoothing(points, 1.5, 0.02),
                             brute_force_adaptive(points, 1.5, 0.02), atol=1e-4)


def test_motion_adaptive_smoothing_keeps_turns_that_a_fixed_gaussian_rounds_off():
  # A still face that starts moving fast at frame 40: the fixed Gaussian cuts the corner.
  rng = np.random.default_rng(0)
  x = np.maximum(np.arange(80) - 40, 0) * 8.0
  truth = grid_face()[None] + x[:, None, None] * np.array([1.0, 0.0])
  noisy = truth + rng.normal(0, 1.0, truth.shape)
  fixed, adaptive = track.smooth_points(noisy, 2.0), track.motion_adaptive_smoothing(noisy, 2.0, 0.02)
  error = lambda p: np.abs(p - truth).mean(axis=(1, 2))
  assert error(adaptive)[38:43].max() < 0.5 * error(fixed)[38:43].max()
  # Still stretches are smoothed nearly as much as before; symmetric taps keep constant motion exact.
  assert error(adaptive)[5:30].mean() < 1.2 * error(fixed)[5:30].mean() < 0.6 * error(noisy)[5:30].mean()
  line = grid_face()[None] + np.arange(30)[:, None, None] * np.array([6.0, 2.0])
  np.testing.assert_allclose(track.motion_adaptive_smoothing(line, 2.0, 0.02)[6:-6], line[6:-6], atol=1e-3)
  # half_speed 0 (off) is the fixed Gaussian; sigma 0 leaves the points alone.
  np.testing.assert_array_equal(track.motion_adaptive_smoothing(noisy, 2.0, 0.0), fixed)
  np.testing.assert_array_equal(track.motion_adaptive_smoothing(noisy, 0.0, 0.02), noisy.astype(np.float32))


def test_stable_crop_is_centred_and_sized_by_the_percentile():
  points = np.stack([face_points(np.array([200.0, 150.0]), 100.0)] * 10)
  box = crop.stable_crop(points, (400, 300), scale=1.5)
  extent = track.box_of_points(points[0])
  side = np.ceil(1.5 * max(extent[2] - extent[0], extent[3] - extent[1]))
  assert box.side == side
  assert abs(box.x0 + side / 2 - 0.5 * (extent[0] + extent[2])) <= 1.0


def test_stable_crop_slides_inside_the_frame_and_never_exceeds_it():
  points = np.stack([face_points(np.array([40.0, 150.0]), 60.0)] * 5)
  box = crop.stable_crop(points, (400, 300), scale=2.0)
  assert box.x0 == 0.0 and box.side <= 300
  big = crop.stable_crop(np.stack([face_points(np.array([200.0, 150.0]), 250.0)] * 5), (400, 300), scale=2.0)
  assert big.side == 300 and big.y0 == 0 and 0 <= big.x0 <= 100


def test_crop_pixels_and_mapping_agree():
  image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)
  box = crop.CropBox(50.0, 20.0, 128.0)
  np.testing.assert_array_equal(crop.crop_image(image, box, 128), image[20:148, 50:178])
  a = crop.crop_to_source(box, 64)
  uv = np.array([[0.0, 0.0], [64.0, 64.0], [10.5, 3.25]])
  source = uv @ a[:, :2].T + a[:, 2]
  np.testing.assert_allclose(crop.to_crop(source, box, 64), uv, atol=1e-4)
  np.testing.assert_allclose(source[1], [178.0, 148.0])
  assert crop.crop_image(image, box, 64).shape == (64, 64, 3)


def test_crop_outside_the_frame_is_black():
  image = np.full((100, 100, 3), 200, np.uint8)
  out = crop.crop_image(image, crop.CropBox(-50.0, 0.0, 100.0), 100)
  assert np.all(out[:, :50] == 0) and np.all(out[:, 50:] == 200)
  assert np.all(crop.crop_image(image, crop.CropBox(500.0, 0.0, 50.0), 32) == 0)
