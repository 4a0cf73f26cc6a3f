"""Face tracks through a video: detect every N frames, follow each face with its own landmarks between.

The detector (`prep.detect.FaceDetector`) runs on frame 0, every `detect_every` frames after, and on
the frame after any track was lost. Between detections each face is followed as MediaPipe's face
mesh graph does: the landmarks of frame t give the region of interest of frame t+1
(`prep.landmarks.roi_from_landmarks`), so a face costs one landmark call per frame. A detection joins
the track whose landmark box it overlaps most (IoU >= `iou_threshold`); an unmatched detection starts
a new track. A track ends at the first frame whose face-presence score is below `min_presence`, so
every track is a contiguous run of frames; the main face is the longest track (ties: the larger
face).

All points are image pixels, x right, y down (DESIGN.md). `smooth_points` then filters a track's
landmarks over time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import NamedTuple, Protocol

import numpy as np

from tfvgan_jax.prep import detect
from tfvgan_jax.prep import landmarks as landmarks_lib
from tfvgan_jax.prep.video import Frame


@dataclasses.dataclass(frozen=True)
class TrackConfig:
  """How faces are followed.

  Attributes:
    detect_every: run the detector every this many frames (and after a track is lost). 10 at 25-30
      fps re-anchors a drifting region within a third of a second while the detector costs ~10% of
      the landmark model.
    min_presence: Face Mesh's face-presence probability below which the face counts as lost.
    iou_threshold: the overlap of a detection and a track's landmark box for them to be one face.
    max_faces: the most faces followed at once (each costs a landmark call per frame).
  """

  detect_every: int = 10
  min_presence: float = 0.5
  iou_threshold: float = 0.3
  max_faces: int = 2

  def __post_init__(self):
    if self.detect_every < 1:
      raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
    if self.max_faces < 1:
      raise ValueError(f"max_faces must be >= 1, got {self.max_faces}")


class Track(NamedTuple):
  """One face followed over consecutive frames (or segments of them, after `join_tracks`).

  Attributes:
    frames: [T] int64 increasing frame numbers, consecutive as `track_faces` makes them.
    points: [T, 468, 3] float32 Face Mesh landmarks in image pixels (z: depth toward the camera).
    scores: [T] float32 face-presence probabilities.
  """

  frames: np.ndarray
  points: np.ndarray
  scores: np.ndarray

  def __len__(self) -> int:
    return len(self.frames)


class _Detector(Protocol):
  def __call__(self, image: np.ndarray) -> list: ...


class _Landmarker(Protocol):
  def __call__(self, image: np.ndarray, roi: landmarks_lib.RegionOfInterest): ...


def box_of_points(points: np.ndarray) -> np.ndarray:
  """[..., N, >=2] points -> [..., 4] their bounding box (x0, y0, x1, y1)."""
  xy = np.asarray(points)[..., :2]
  return np.concatenate([xy.min(axis=-2), xy.max(axis=-2)], axis=-1)


def box_size(box: np.ndarray) -> np.ndarray:
  """[..., 4] boxes (x0, y0, x1, y1) -> [...] their larger side (a face's size)."""
  return np.maximum(box[..., 2] - box[..., 0], box[..., 3] - box[..., 1])


class _Following:
  """A track being extended frame by frame."""

  def __init__(self, roi):
    self.roi = roi
    self.box = None
    self.frames, self.points, self.scores = [], [], []

  def finish(self) -> Track:
    return Track(np.asarray(self.frames, np.int64), np.asarray(self.points, np.float32).reshape(-1, 468, 3),
                 np.asarray(self.scores, np.float32))


def _match(detections, following: list, threshold: float) -> list:
  """For each detection, the index of the track it continues or None (greedy by IoU)."""
  pairs = sorted(((float(detect.box_iou(np.asarray(d.box), f.box[None])[0]), di, fi) for di, d in enumerate(detections)
                  for fi, f in enumerate(following) if f.box is not None), reverse=True)
  owner, taken = [None] * len(detections), set()
  for iou, di, fi in pairs:
    if iou < threshold:
      break
    if owner[di] is None and fi not in taken:
      owner[di] = fi
      taken.add(fi)
  return owner


def track_faces(frames: Iterable[Frame], detector: _Detector, landmarker: _Landmarker,
                config: TrackConfig = TrackConfig()) -> tuple[list[Track], int]:
  """Follows every face (up to `config.max_faces` at once) through `frames`.

  Args:
    frames: decoded frames in order (`prep.video.read_frames`), consumed one at a time.
    detector: image -> list of detections with `.box` (x0, y0, x1, y1) and keypoints, best first.
    landmarker: (image, region of interest) -> result with `.points` [468, 3] and `.score`.
    config: detection cadence and thresholds.

  Returns:
    (tracks, frames seen): every track, in the order they ended.
  """
  following: list[_Following] = []
  done: list[Track] = []
  since_detection = config.detect_every
  seen = 0
  for frame in frames:
    seen += 1
    if since_detection >= config.detect_every or not following:
      since_detection = 0
      detections = list(detector(frame.image))
      owners = _match(detections, following, config.iou_threshold)
      for detection, owner in zip(detections, owners):
        if owner is None and len(following) < config.max_faces:
          following.append(_Following(landmarks_lib.roi_from_detection(detection)))
    since_detection += 1
    kept = []
    for face in following:
      result = landmarker(frame.image, face.roi)
      if result.score < config.min_presence:
        done.append(face.finish())
        since_detection = config.detect_every  # look for the face again on the next frame
        continue
      points = np.asarray(result.points, np.float32)
      face.frames.append(frame.index)
      face.points.append(points)
      face.scores.append(result.score)
      face.roi = landmarks_lib.roi_from_landmarks(points)
      face.box = box_of_points(points)
      kept.append(face)
    following = kept
  done.extend(face.finish() for face in following)
  return [track for track in done if len(track)], seen


def main_track(tracks: list[Track]) -> Track | None:
  """The longest track (ties: the larger face), or None when no face was followed."""
  return max(tracks, key=lambda t: (len(t), float(np.mean(box_size(box_of_points(t.points))))), default=None)


def join_tracks(tracks: list[Track], max_gap: int, min_iou: float = 0.1) -> list[Track]:
  """Joins each track to one that ended at most `max_gap` frames before it started in about the
  same place: the same face lost for a moment (a hand, a turn, a missed detection) and found again.

  A track continues the earlier, not yet continued track whose last landmark box overlaps its first
  one best (IoU >= `min_iou`); tracks that overlap in time are different faces and never join.
  Joined tracks keep their frame numbers, so their frames are no longer consecutive (`runs`).
  `max_gap` 0 returns the tracks as they are.
  """
  if max_gap <= 0 or len(tracks) < 2:
    return list(tracks)
  chains: list[list[Track]] = []
  for piece in sorted(tracks, key=lambda t: int(t.frames[0])):
    start, first_box = int(piece.frames[0]), box_of_points(piece.points[0])
    best, best_iou = None, min_iou
    for chain in chains:
      gap = start - int(chain[-1].frames[-1]) - 1
      if 0 <= gap <= max_gap:
        iou = float(detect.box_iou(first_box, box_of_points(chain[-1].points[-1])[None])[0])
        if iou >= best_iou:
          best, best_iou = chain, iou
    if best is None:
      chains.append([piece])
    else:
      best.append(piece)
  return [Track(*(np.concatenate(parts) for parts in zip(*chain))) if len(chain) > 1 else chain[0] for chain in chains]


def runs(frames: np.ndarray) -> list[slice]:
  """Slices of `frames` (increasing frame numbers) over which the numbers are consecutive."""
  frames = np.asarray(frames)
  breaks = np.flatnonzero(np.diff(frames) != 1) + 1
  edges = [0, *breaks.tolist(), len(frames)]
  return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def gaussian_weights(sigma: float) -> np.ndarray:
  """[2r+1] normalized Gaussian taps, r = ceil(3 sigma); [1] for sigma = 0."""
  if sigma < 0:
    raise ValueError(f"smoothing sigma must be >= 0, got {sigma}")
  if sigma == 0:
    return np.ones(1)
  radius = int(np.ceil(3 * sigma))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  return taps / taps.sum()


def smooth_points(points: np.ndarray, sigma: float) -> np.ndarray:
  """Zero-lag Gaussian smoothing over time of [T, ...] points (sigma in frames; 0 = off).

  Offline data preparation sees the whole track, so the filter is centred (no lag, unlike the
  online One-Euro filter of live trackers). Near the ends the kernel is truncated and renormalized,
  so a constant track stays constant and nothing is extrapolated.
  """
  points = np.asarray(points, np.float64)
  radius = len(gaussian_weights(sigma)) // 2
  if radius == 0 or len(points) < 2:
    return points.astype(np.float32)
  return _gaussian_filter(points, np.full(len(points), float(sigma)), radius)


def _gaussian_filter(points: np.ndarray, sigmas: np.ndarray, radius: int) -> np.ndarray:
  """[T, ...] points, frame t averaged over frames t-radius..t+radius with Gaussian weights of width
  sigmas[t], truncated at the track's ends and renormalized. One shifted copy at a time: memory
  stays O(T x points) for long videos."""
  count = len(points)
  flat = points.reshape(count, -1)
  offsets = np.arange(-radius, radius + 1)
  index = np.arange(count)[:, None] + offsets[None, :]  # [T, 2r+1]
  weights = np.exp(-0.5 * (offsets[None, :] / sigmas[:, None]) ** 2) * ((index >= 0) & (index < count))
  weights /= weights.sum(axis=1, keepdims=True)
  out = np.zeros_like(flat)
  for k in range(len(offsets)):
    out += weights[:, k, None] * flat[np.clip(index[:, k], 0, count - 1)]
  return out.reshape(points.shape).astype(np.float32)


def landmark_speed(points: np.ndarray) -> np.ndarray:
  """[T] speed of a [T, N, 2+] landmark track in face sizes per frame.

  The median over the points of the central-difference displacement (one-sided at the ends),
  divided by the frame's face box side: a head turn, a nod or a walk towards the camera all count,
  jitter of a few points does not.
  """
  points = np.asarray(points, np.float64)[..., :2]
  if len(points) < 2:
    return np.zeros(len(points))
  velocity = np.gradient(points, axis=0)
  speed = np.median(np.linalg.norm(velocity, axis=-1), axis=-1)
  return speed / np.maximum(box_size(box_of_points(points)), 1e-6)


def motion_adaptive_smoothing(points: np.ndarray, sigma: float, half_speed: float) -> np.ndarray:
  """Zero-lag Gaussian smoothing whose width falls as the face moves faster (sigma in frames).

  Frame t is smoothed with sigma_t = sigma / (1 + v_t / half_speed), v_t the `landmark_speed` of
  the Gaussian-smoothed track, so the filter is `smooth_points(points, sigma)` on a still face and
  half as wide at `half_speed` face sizes per frame: the offline counterpart of the One-Euro filter's
  speed-dependent cutoff. A fixed Gaussian rounds off fast head turns and leaves the edited face
  behind the head; this one keeps them. `half_speed` <= 0 gives the fixed Gaussian.
  """
  points = np.asarray(points, np.float64)
  radius = len(gaussian_weights(sigma)) // 2
  if half_speed <= 0 or radius == 0 or len(points) < 2:
    return smooth_points(points, sigma)
  speed = landmark_speed(smooth_points(points, sigma))
  return _gaussian_filter(points, sigma / (1.0 + speed / half_speed), radius)
