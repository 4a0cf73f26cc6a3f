"""468-point face landmarks with MediaPipe's Face Mesh model, run by LiteRT on the CPU.

Coordinates follow DESIGN.md: x to the right, y down, origin at the image's top-left corner, pixel
centres at integer + 0.5. Rotations are in radians in this y-down frame, so a positive angle turns
clockwise on screen. "Right" and "left" are the subject's.

The model sees a square crop of the face, rotated so that the eyes are level: a
`RegionOfInterest` (centre, side, rotation) in image pixels. The first frame's region comes from
the detector (`roi_from_detection`); later frames reuse the previous frame's landmarks
(`roi_from_landmarks`), which is how MediaPipe tracks a face without running the detector. Both
enlarge the face's square by 1.5, the margin the model was trained with.

`FaceMesh(...)(image, roi)` returns `MeshResult.points` [468, 3]: x, y in image pixels and z, the
relative depth, in the same pixel scale, growing TOWARD the camera (DESIGN.md). MediaPipe's z grows
away from the camera, so its sign is flipped here; z is relative (about 0 at the face's centre of
mass), not a distance. The `face_landmarker.task` model (256 x 256 input, 478 points with the
irises) works too: the input size is read from the model and the first 468 points are kept.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from PIL import Image

from tfvgan_jax.prep import topology
from tfvgan_jax.prep.detect import Detection, check_image, load_interpreter, sigmoid

# The face's square is enlarged by this much for the crop (MediaPipe's RectTransformation scale).
ROI_SCALE = 1.5


class RegionOfInterest(NamedTuple):
  """A rotated square of the image.

  Attributes:
    center: [2] float32 (x, y) image pixels.
    size: side of the square in image pixels.
    rotation: radians, clockwise on screen; the square's x axis points along (cos, sin).
  """

  center: np.ndarray
  size: float
  rotation: float


class MeshResult(NamedTuple):
  """Landmarks of one face.

  Attributes:
    points: [468, 3] float32: x, y image pixels; z relative depth in pixels, larger = nearer.
    score: face-presence probability in the crop.
  """

  points: np.ndarray
  score: float


def _rotation(angle: float) -> np.ndarray:
  """[2, 2] matrix turning by `angle` radians (clockwise on screen, y down)."""
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s], [s, c]], np.float64)


def eye_line_rotation(right_eye: np.ndarray, left_eye: np.ndarray) -> float:
  """Angle (radians, clockwise on screen) of the line from the right eye to the left eye.

  Turning the image by minus this angle levels the eyes; 0 for an upright face.
  """
  dx, dy = np.asarray(left_eye, np.float64)[:2] - np.asarray(right_eye, np.float64)[:2]
  return float(np.arctan2(dy, dx))


def roi_from_detection(detection: Detection) -> RegionOfInterest:
  """The landmark model's region for a detector box: centred on the box, side 1.5 x its longer
  side, rotated so that the detector's two eye keypoints are level."""
  box = np.asarray(detection.box, np.float64)
  size = ROI_SCALE * float(np.max(box[2:] - box[:2]))
  rotation = eye_line_rotation(detection.keypoints[0], detection.keypoints[1])
  return RegionOfInterest(((box[:2] + box[2:]) / 2).astype(np.float32), size, rotation)


def roi_from_landmarks(points: np.ndarray) -> RegionOfInterest:
  """The region for the next frame from this frame's landmarks.

  The rotation levels the outer eye corners (`topology.RIGHT_EYE_OUTER` -> `LEFT_EYE_OUTER`); the
  square is the bounding box of all points taken in that rotated frame, centred on it, with side
  1.5 x its longer side.

  Args:
    points: [468, 2 or 3] image pixels (z is ignored).
  """
  points = np.asarray(points, np.float64)[:, :2]
  if points.shape[0] < topology.NUM_POINTS:
    raise ValueError(f"roi_from_landmarks: expected [468, 2 or 3] points, got {points.shape}")
  rotation = eye_line_rotation(points[topology.RIGHT_EYE_OUTER], points[topology.LEFT_EYE_OUTER])
  turn = _rotation(rotation)
  upright = points @ turn  # row-vector form of turn.T @ p: coordinates along the square's axes
  lo, hi = upright.min(axis=0), upright.max(axis=0)
  center = turn @ ((lo + hi) / 2)
  return RegionOfInterest(center.astype(np.float32), ROI_SCALE * float(np.max(hi - lo)), rotation)


def crop_transform(roi: RegionOfInterest, out_size: int, inverse: bool = False) -> np.ndarray:
  """Affine map between image pixels and the pixels of an out_size x out_size crop of `roi`.

  crop = S/2 + (S / size) R(-rotation) (image - center), with S = out_size and R(a) the rotation
  [[cos a, -sin a], [sin a, cos a]]; `inverse` gives image = center + (size / S) R(rotation)
  (crop - S/2). Both act on continuous coordinates (pixel centres at + 0.5).

  Returns:
    [2, 3] float64 matrix M: target = M[:, :2] @ source + M[:, 2].
  """
  center = np.asarray(roi.center, np.float64)
  if inverse:
    linear = (roi.size / out_size) * _rotation(roi.rotation)
    return np.concatenate([linear, (center - linear @ np.full(2, out_size / 2))[:, None]], axis=1)
  linear = (out_size / roi.size) * _rotation(-roi.rotation)
  return np.concatenate([linear, (out_size / 2 - linear @ center)[:, None]], axis=1)


def crop_image(image: np.ndarray, roi: RegionOfInterest, out_size: int) -> np.ndarray:
  """Bilinear crop of `roi`: uint8 [out_size, out_size, 3]; outside the image is black.

  No low-pass filter before sampling, as in MediaPipe's own crop: a face many times larger than the
  crop aliases slightly, which the landmark model tolerates.
  """
  to_image = crop_transform(roi, out_size, inverse=True)
  return np.asarray(Image.fromarray(image).transform(
      (out_size, out_size), Image.AFFINE, tuple(to_image.reshape(6)), resample=Image.BILINEAR))


def ibug68(points: np.ndarray) -> np.ndarray:
  """The 68 iBUG / 300-W landmarks from Face Mesh points [468 or 478, k] -> [68, k]."""
  return np.asarray(points)[topology.IBUG68_FROM_MESH]


class FaceMesh:
  """MediaPipe's Face Mesh landmark model.

  `mesh(image, roi)` crops `roi` from a uint8 [H, W, 3] RGB image and returns a `MeshResult`.

  Args:
    model_path: `face_landmark.tflite` (192 x 192, 468 points) or the `face_landmarks_detector.tflite`
      of a `face_landmarker.task` bundle (see `model_files.find_models`).
    num_threads: LiteRT CPU threads.
  """

  def __init__(self, model_path, num_threads: int = 1):
    self.model_path = os.fspath(model_path)
    self._interpreter = load_interpreter(model_path, num_threads)
    (input_detail,) = self._interpreter.get_input_details()
    shape = tuple(input_detail["shape"])
    if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 3:
      raise ValueError(f"{self.model_path}: expected a square [1, S, S, 3] input, got {list(shape)}")
    self.input_size = int(shape[1])
    self._input = input_detail["index"]
    outputs = self._interpreter.get_output_details()
    sizes = [int(np.prod(d["shape"])) for d in outputs]
    # The landmarks are the largest output (1404 or 1434 numbers); the face-presence logit is the
    # single-number output first by name ("conv2d_31" in the 192 model, "Identity_1" in the 256 one).
    landmarks = int(np.argmax(sizes))
    presence = sorted((d["name"], i) for i, d in enumerate(outputs) if sizes[i] == 1)
    if sizes[landmarks] < 3 * topology.NUM_POINTS or sizes[landmarks] % 3 or not presence:
      raise ValueError(f"{self.model_path}: expected a landmark output of at least "
                       f"{3 * topology.NUM_POINTS} numbers and a presence score, got outputs of "
                       f"sizes {sizes}; is this a Face Mesh model?")
    self._landmarks = outputs[landmarks]["index"]
    self._presence = outputs[presence[0][1]]["index"]

  def __call__(self, image: np.ndarray, roi: RegionOfInterest) -> MeshResult:
    image = check_image(image, "FaceMesh")
    size = self.input_size
    crop = crop_image(image, roi, size)
    self._interpreter.set_tensor(self._input, (crop.astype(np.float32) * (1.0 / 255.0))[None])
    self._interpreter.invoke()
    raw = self._interpreter.get_tensor(self._landmarks).reshape(-1, 3)[:topology.NUM_POINTS]
    logit = self._interpreter.get_tensor(self._presence).reshape(())
    to_image = crop_transform(roi, size, inverse=True)
    xy = raw[:, :2].astype(np.float64) @ to_image[:, :2].T + to_image[:, 2]
    depth = -raw[:, 2:3].astype(np.float64) * (roi.size / size)
    points = np.concatenate([xy, depth], axis=1).astype(np.float32)
    return MeshResult(points, float(sigmoid(logit)))
