"""Face detection with MediaPipe's short-range BlazeFace model, run by LiteRT on the CPU.

Coordinates follow DESIGN.md: x to the right, y down, origin at the image's top-left corner, pixel
centres at integer + 0.5 (so a box edge at x = 10 is the left edge of pixel column 10). "Right"
and "left" are the subject's: the right eye is on the image's left in an unmirrored photo.

The model sees a 128 x 128 RGB image in [-1, 1]. A frame of another shape is letterboxed: scaled
to fit (aspect kept) and centred on a black square, and results are mapped back to frame pixels.
It was trained for faces within about two metres of a phone camera: faces narrower than about a
fifth of the frame's longer side fall below its smallest anchors and are missed. For small faces
in a large frame, run the detector on a region (`FaceDetector(...)(frame[y0:y1, x0:x1])`, then
add x0, y0) - the video pass does this around the tracked face.

Per anchor the model outputs 16 numbers (`ssd_anchors`, `decode_boxes`) and a score logit;
overlapping detections are merged by weighted non-maximum suppression, as MediaPipe does for faces.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image

INPUT_SIZE = 128
FULL_RANGE_INPUT_SIZE = 192
NUM_ANCHORS = 896
NUM_KEYPOINTS = 6
# MediaPipe's keypoint order; "right" and "left" are the subject's.
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion",
                  "left_ear_tragion")
# Raw offsets are in input pixels; MediaPipe's x/y/w/h_scale for this model.
_RAW_SCALE = 128.0
# Logits are clipped to +-100 before the sigmoid, as MediaPipe's score_clipping_thresh.
_LOGIT_CLIP = 100.0


class Detection(NamedTuple):
  """One face.

  Attributes:
    box: [4] float32 (x0, y0, x1, y1), image pixels.
    keypoints: [6, 2] float32 (x, y) image pixels in `KEYPOINT_NAMES` order.
    score: probability that the box holds a face.
  """

  box: np.ndarray
  keypoints: np.ndarray
  score: float


def sigmoid(logits: np.ndarray) -> np.ndarray:
  """Logistic function 1 / (1 + exp(-x)), computed in float64 so that no logit overflows."""
  return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, np.float64)))).astype(np.float32)


def ssd_anchors(input_size: int = INPUT_SIZE, strides=(8, 16, 16, 16),
                anchors_per_layer: int = 2) -> np.ndarray:
  """Anchor centres of the short-range detector, in [0, 1] input coordinates.

  As MediaPipe's SsdAnchorsCalculator with fixed anchor size (every anchor is 1 x 1, so only
  centres matter) and two anchors per cell per layer (aspect ratio 1 and the interpolated scale).
  Consecutive layers with the same stride share one grid; anchors are ordered layer group, row,
  column, then anchor within the cell. For 128 x 128 and strides 8, 16, 16, 16: a 16 x 16 grid with
  2 anchors per cell (512) and an 8 x 8 grid with 6 (384): 896 anchors.

  Returns:
    [A, 2] float32 (x, y) cell centres: ((column + 0.5) / grid, (row + 0.5) / grid).
  """
  centres = []
  layer = 0
  while layer < len(strides):
    stride = strides[layer]
    same = 0
    while layer + same < len(strides) and strides[layer + same] == stride:
      same += 1
    grid = int(np.ceil(input_size / stride))
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    cell = np.stack([(cols + 0.5) / grid, (rows + 0.5) / grid], axis=-1).reshape(-1, 1, 2)
    centres.append(np.repeat(cell, same * anchors_per_layer, axis=1).reshape(-1, 2))
    layer += same
  return np.concatenate(centres).astype(np.float32)


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, raw_scale: float = _RAW_SCALE) -> tuple[np.ndarray, np.ndarray]:
  """Decodes the regressor output into boxes and keypoints in [0, 1] input coordinates.

  Each anchor's 16 numbers are (dx, dy, w, h, then 6 keypoint (dx, dy)), in input pixels relative
  to the anchor centre: centre = anchor + (dx, dy) / 128, size = (w, h) / 128 (`raw_scale`, the
  model's input size: 192 for the full-range model).

  Args:
    raw: [A, 16] regressor output.
    anchors: [A, 2] anchor centres from `ssd_anchors`.

  Returns:
    boxes [A, 4] (x0, y0, x1, y1) and keypoints [A, 6, 2] (x, y), float32.
  """
  raw = np.asarray(raw, np.float32)
  anchors = np.asarray(anchors, np.float32)
  if raw.ndim != 2 or raw.shape[1] != 4 + 2 * NUM_KEYPOINTS or raw.shape[0] != anchors.shape[0]:
    raise ValueError(f"decode_boxes: raw {raw.shape} does not match anchors {anchors.shape}")
  centre = anchors + raw[:, 0:2] / raw_scale
  half = raw[:, 2:4] / (2.0 * raw_scale)
  boxes = np.concatenate([centre - half, centre + half], axis=1)
  keypoints = anchors[:, None, :] + raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) / raw_scale
  return boxes, keypoints


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """Intersection over union of one box [4] with each of boxes [N, 4] (x0, y0, x1, y1); [N]."""
  lo = np.maximum(box[:2], boxes[:, :2])
  hi = np.minimum(box[2:], boxes[:, 2:])
  intersection = np.prod(np.clip(hi - lo, 0.0, None), axis=1)
  area = np.prod(np.clip(box[2:] - box[:2], 0.0, None))
  areas = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None), axis=1)
  union = area + areas - intersection
  return np.where(union > 0.0, intersection / np.where(union > 0.0, union, 1.0), 0.0)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                        keypoints: Optional[np.ndarray] = None,
                        max_detections: Optional[int] = None):
  """Weighted non-maximum suppression (MediaPipe's WEIGHTED algorithm, used for faces).

  Detections are visited best score first. The best remaining one gathers every remaining detection
  (itself included) whose IoU with it exceeds `iou_threshold`; the cluster becomes one detection
  with the best one's score and the score-weighted mean of the cluster's boxes (and keypoints), and
  leaves the pool. Averaging the overlapping anchors steadies the box from frame to frame, where
  plain NMS would jump between anchors.

  Args:
    boxes: [N, 4] (x0, y0, x1, y1).
    scores: [N] non-negative scores.
    iou_threshold: overlap above which a detection joins the cluster.
    keypoints: optional [N, K, 2], averaged with the same weights.
    max_detections: stop after this many clusters (None: all).

  Returns:
    (boxes [M, 4], scores [M], keypoints [M, K, 2] or None), best first.
  """
  boxes = np.asarray(boxes, np.float32)
  scores = np.asarray(scores, np.float32)
  remaining = np.argsort(-scores, kind="stable")
  out_boxes, out_scores, out_keypoints = [], [], []
  while remaining.size and (max_detections is None or len(out_scores) < max_detections):
    best = remaining[0]
    cluster = remaining[box_iou(boxes[best], boxes[remaining]) > iou_threshold]
    cluster = cluster if cluster.size else remaining[:1]
    weights = scores[cluster] / max(float(scores[cluster].sum()), np.finfo(np.float32).tiny)
    out_boxes.append(weights @ boxes[cluster])
    out_scores.append(scores[best])
    if keypoints is not None:
      out_keypoints.append(np.tensordot(weights, keypoints[cluster], axes=1))
    remaining = np.setdiff1d(remaining, cluster, assume_unique=True)
    remaining = remaining[np.argsort(-scores[remaining], kind="stable")]
  count = len(out_scores)
  merged_boxes = np.asarray(out_boxes, np.float32).reshape(count, 4)
  merged_scores = np.asarray(out_scores, np.float32).reshape(count)
  if keypoints is None:
    return merged_boxes, merged_scores, None
  merged_keypoints = np.asarray(out_keypoints, np.float32).reshape(
      (count,) + np.shape(keypoints)[1:])
  return merged_boxes, merged_scores, merged_keypoints


class Letterbox(NamedTuple):
  """How a frame was placed in the square model input: input px = frame px * scale + offset."""

  scale: np.ndarray
  offset: np.ndarray


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
  """Scales a frame to fit a size x size square (aspect kept) and centres it on black.

  Args:
    image: uint8 [H, W, 3] RGB.
    size: side of the square.

  Returns:
    uint8 [size, size, 3] and the `Letterbox` mapping frame pixels to square pixels (per-axis
    scales, since the fitted size is rounded to whole pixels).
  """
  height, width = image.shape[:2]
  fit = size / max(height, width)
  new_width, new_height = max(1, round(width * fit)), max(1, round(height * fit))
  resized = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.BILINEAR))
  left, top = (size - new_width) // 2, (size - new_height) // 2
  square = np.zeros((size, size, 3), np.uint8)
  square[top:top + new_height, left:left + new_width] = resized
  scale = np.array([new_width / width, new_height / height], np.float32)
  return square, Letterbox(scale, np.array([left, top], np.float32))


def check_image(image: np.ndarray, caller: str) -> np.ndarray:
  """The image as an array; raises ValueError naming `caller` unless it is uint8 [H, W, 3]."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
    raise ValueError(f"{caller}: expected a uint8 [H, W, 3] RGB image, got {image.dtype} "
                     f"{image.shape}")
  return image


def load_interpreter(model_path, num_threads: int):
  """A LiteRT interpreter for a `.tflite` file, tensors allocated."""
  from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 (LiteRT is only needed here)
  model_path = os.fspath(model_path)
  if not os.path.isfile(model_path):
    raise FileNotFoundError(f"{model_path}: no such model file")
  interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
  interpreter.allocate_tensors()
  return interpreter


# The two BlazeFace models by input size: (anchor strides, anchors per cell per layer), as
# MediaPipe's face_detection_short_range and face_detection_full_range graphs set them.
_ANCHOR_LAYOUTS = {INPUT_SIZE: ((8, 16, 16, 16), 2), FULL_RANGE_INPUT_SIZE: ((4,), 1)}


class FaceDetector:
  """MediaPipe's short-range (or full-range) face detector.

  `detector(image)` returns the faces of a uint8 [H, W, 3] RGB frame as a list of `Detection`,
  best score first, in frame pixels. The model is told by its input size: 128 x 128 is the
  short-range model (896 anchors, faces within about 2 m), 192 x 192 the full-range sparse one
  (`face_detection_full_range_sparse.tflite`, 2304 anchors on a 48 x 48 grid: faces down to about
  a twentieth of the frame, up to about 5 m).

  Args:
    model_path: `face_detection_short_range.tflite` (see `model_files.find_models`) or the
      full-range model.
    num_threads: LiteRT CPU threads.
    score_threshold: minimum face probability kept.
    iou_threshold: overlap above which detections merge (weighted NMS).
  """

  def __init__(self, model_path, num_threads: int = 1, score_threshold: float = 0.5,
               iou_threshold: float = 0.3):
    self.model_path = os.fspath(model_path)
    self.score_threshold = score_threshold
    self.iou_threshold = iou_threshold
    self._interpreter = load_interpreter(model_path, num_threads)
    (input_detail,) = self._interpreter.get_input_details()
    shape = tuple(input_detail["shape"])
    if len(shape) != 4 or shape[1] != shape[2] or shape[1] not in _ANCHOR_LAYOUTS or shape[3] != 3:
      raise ValueError(f"{self.model_path}: expected a [1, {INPUT_SIZE}, {INPUT_SIZE}, 3] input (or 192 for the "
                       f"full-range model), got {list(shape)}; is this the short-range face detector?")
    self.input_size = int(shape[1])
    strides, per_cell = _ANCHOR_LAYOUTS[self.input_size]
    self._anchors = ssd_anchors(self.input_size, strides, per_cell)
    self._input = input_detail["index"]
    outputs = {tuple(d["shape"]): d["index"] for d in self._interpreter.get_output_details()}
    count = len(self._anchors)
    try:
      self._regressors = outputs[(1, count, 4 + 2 * NUM_KEYPOINTS)]
      self._classificators = outputs[(1, count, 1)]
    except KeyError:
      raise ValueError(f"{self.model_path}: expected outputs [1, {count}, 16] and [1, {count}, 1], got "
                       f"{sorted(outputs)}; is this the short-range face detector (or the full-range one)?") from None

  def __call__(self, image: np.ndarray) -> list[Detection]:
    image = check_image(image, "FaceDetector")
    size = self.input_size
    square, placement = letterbox(image, size)
    tensor = square.astype(np.float32) * (2.0 / 255.0) - 1.0
    self._interpreter.set_tensor(self._input, tensor[None])
    self._interpreter.invoke()
    raw = self._interpreter.get_tensor(self._regressors)[0]
    logits = self._interpreter.get_tensor(self._classificators)[0, :, 0]
    scores = sigmoid(np.clip(logits, -_LOGIT_CLIP, _LOGIT_CLIP))
    keep = scores >= self.score_threshold
    if not keep.any():
      return []
    boxes, keypoints = decode_boxes(raw[keep], self._anchors[keep], float(size))
    boxes, scores, keypoints = non_max_suppression(boxes, scores[keep], self.iou_threshold,
                                                   keypoints)
    to_frame = lambda points: (points * size - placement.offset) / placement.scale
    return [Detection(to_frame(box.reshape(2, 2)).reshape(4).astype(np.float32),
                      to_frame(points).astype(np.float32), float(score))
            for box, points, score in zip(boxes, keypoints, scores)]


class CombinedDetector:
  """Several face detectors as one (the short- and full-range models together): every model's
  detections, merged by the same weighted NMS, best first."""

  def __init__(self, detectors, iou_threshold: float = 0.3):
    self.detectors, self.iou_threshold = list(detectors), iou_threshold

  def __call__(self, image: np.ndarray) -> list[Detection]:
    found = [d for detector in self.detectors for d in detector(image)]
    if len(found) < 2:
      return found
    boxes, scores, keypoints = non_max_suppression(np.stack([d.box for d in found]),
                                                   np.array([d.score for d in found]), self.iou_threshold,
                                                   np.stack([d.keypoints for d in found]))
    return [Detection(b.astype(np.float32), k.astype(np.float32), float(s)) for b, s, k in zip(boxes, scores, keypoints)]
