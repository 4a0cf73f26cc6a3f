"""What stays in front of an edited face: regions of a frame where the input's own pixels are kept.

An occluder source is a function of one frame: `source(image) -> [H, W] float32 in [0, 1]`, 1 where
something covers the face (a hand, a microphone). `OCCLUDER_SOURCES` names them; each entry makes
the source from the model files it needs and returns None, with the reason, where one is missing
(the edit then goes on without it and says so once). Another source, e.g. a user's segmentation
model, is one more function and one more name there.

  hands   MediaPipe's palm detector and 21-point hand-landmark model (palm_detection_full.tflite,
          hand_landmark_full.tflite, Apache-2.0), run by LiteRT as the face models are: palms are
          detected on the whole frame, each palm's rotated region goes to the landmark model, and
          the hand's region is the convex hull of its 21 points with every finger bone drawn as a
          thick line, dilated by a fraction of the hand's size.

`OcclusionTracker` smooths the union of the sources over time (a region fades over a few frames
after its source stops seeing it, so a hand missed for a frame does not flicker in and out) and
feathers its edge. Coordinates as everywhere (DESIGN.md): image pixels, x right, y down.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from tfvgan_jax.prep import detect, model_files
from tfvgan_jax.prep import landmarks as landmarks_lib

PALM_INPUT_SIZE = 192
PALM_KEYPOINTS = 7
HAND_POINTS = 21
# MediaPipe's palm-to-hand region (palm_detection_detection_to_roi): the wrist (keypoint 0) to the
# middle finger's base (keypoint 2) points up, the palm's box enlarged 2.6 times and moved half its
# height toward the fingers.
_HAND_ROI_SCALE = 2.6
_HAND_ROI_SHIFT = -0.5
# Finger bones of the 21-point hand (wrist 0; thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky 17-20).
HAND_BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12),
              (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20))

Occluder = Callable[[np.ndarray], np.ndarray]


class Palm(NamedTuple):
  """One palm: box [4] (x0, y0, x1, y1), keypoints [7, 2] image pixels, score."""

  box: np.ndarray
  keypoints: np.ndarray
  score: float


class PalmDetector:
  """MediaPipe's full palm detector: `detector(image)` -> palms of a uint8 [H, W, 3] frame, best first.

  The frame is letterboxed into 192 x 192 RGB in [0, 1]; 2016 anchors (strides 8, 16, 16, 16, as
  the face detector's at 192 px), 18 numbers each (box, then 7 keypoints), weighted NMS.
  """

  def __init__(self, model_path, num_threads: int = 1, score_threshold: float = 0.5, iou_threshold: float = 0.3,
               max_palms: int = 2):
    self.model_path = os.fspath(model_path)
    self.score_threshold, self.iou_threshold, self.max_palms = score_threshold, iou_threshold, max_palms
    self._interpreter = detect.load_interpreter(model_path, num_threads)
    (input_detail,) = self._interpreter.get_input_details()
    if tuple(input_detail["shape"]) != (1, PALM_INPUT_SIZE, PALM_INPUT_SIZE, 3):
      raise ValueError(f"{self.model_path}: expected a [1, 192, 192, 3] input, got {list(input_detail['shape'])}; "
                       "is this palm_detection_full.tflite?")
    self._input = input_detail["index"]
    self._anchors = detect.ssd_anchors(PALM_INPUT_SIZE, (8, 16, 16, 16), 2)
    outputs = {tuple(d["shape"]): d["index"] for d in self._interpreter.get_output_details()}
    try:
      self._regressors = outputs[(1, len(self._anchors), 4 + 2 * PALM_KEYPOINTS)]
      self._scores = outputs[(1, len(self._anchors), 1)]
    except KeyError:
      raise ValueError(f"{self.model_path}: expected outputs [1, {len(self._anchors)}, 18] and "
                       f"[1, {len(self._anchors)}, 1], got {sorted(outputs)}") from None

  def __call__(self, image: np.ndarray) -> list[Palm]:
    image = detect.check_image(image, "PalmDetector")
    square, placement = detect.letterbox(image, PALM_INPUT_SIZE)
    self._interpreter.set_tensor(self._input, (square.astype(np.float32) / 255.0)[None])
    self._interpreter.invoke()
    raw = self._interpreter.get_tensor(self._regressors)[0]
    scores = detect.sigmoid(np.clip(self._interpreter.get_tensor(self._scores)[0, :, 0], -100.0, 100.0))
    keep = scores >= self.score_threshold
    if not keep.any():
      return []
    anchors, raw = self._anchors[keep], raw[keep]
    centre = anchors + raw[:, 0:2] / PALM_INPUT_SIZE
    half = raw[:, 2:4] / (2.0 * PALM_INPUT_SIZE)
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = anchors[:, None] + raw[:, 4:].reshape(-1, PALM_KEYPOINTS, 2) / PALM_INPUT_SIZE
    boxes, scores, keypoints = detect.non_max_suppression(boxes, scores[keep], self.iou_threshold, keypoints,
                                                          self.max_palms)
    to_frame = lambda points: (points * PALM_INPUT_SIZE - placement.offset) / placement.scale  # noqa: E731
    return [Palm(to_frame(b.reshape(2, 2)).reshape(4).astype(np.float32), to_frame(k).astype(np.float32), float(s))
            for b, k, s in zip(boxes, keypoints, scores)]


def hand_region(palm: Palm) -> landmarks_lib.RegionOfInterest:
  """The hand-landmark model's rotated square for a palm (MediaPipe's palm-to-hand region)."""
  wrist, middle = np.asarray(palm.keypoints[0], np.float64), np.asarray(palm.keypoints[2], np.float64)
  rotation = math.pi / 2 - math.atan2(-(middle[1] - wrist[1]), middle[0] - wrist[0])
  rotation = (rotation + math.pi) % (2 * math.pi) - math.pi
  box = np.asarray(palm.box, np.float64)
  width, height = box[2:] - box[:2]
  centre = (box[:2] + box[2:]) / 2 + height * _HAND_ROI_SHIFT * np.array([-math.sin(rotation), math.cos(rotation)])
  return landmarks_lib.RegionOfInterest(centre.astype(np.float32), _HAND_ROI_SCALE * float(max(width, height)),
                                        rotation)


class HandLandmarks:
  """MediaPipe's full hand-landmark model: `model(image, region)` -> ([21, 2] image pixels, presence)."""

  def __init__(self, model_path, num_threads: int = 1):
    self.model_path = os.fspath(model_path)
    self._interpreter = detect.load_interpreter(model_path, num_threads)
    (input_detail,) = self._interpreter.get_input_details()
    shape = tuple(input_detail["shape"])
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
      raise ValueError(f"{self.model_path}: expected a square [1, S, S, 3] input, got {list(shape)}")
    self.input_size = int(shape[1])
    self._input = input_detail["index"]
    outputs = sorted(self._interpreter.get_output_details(), key=lambda d: d["name"])
    sizes = [int(np.prod(d["shape"])) for d in outputs]
    if 3 * HAND_POINTS not in sizes or 1 not in sizes:
      raise ValueError(f"{self.model_path}: expected a [1, 63] landmark output and a presence score, got outputs of "
                       f"sizes {sizes}; is this hand_landmark_full.tflite?")
    # Outputs by name: Identity (landmarks), Identity_1 (hand presence), Identity_2 (handedness),
    # Identity_3 (world landmarks): the first of each size is the one wanted.
    self._points = outputs[sizes.index(3 * HAND_POINTS)]["index"]
    self._presence = outputs[sizes.index(1)]["index"]

  def __call__(self, image: np.ndarray, region: landmarks_lib.RegionOfInterest) -> tuple[np.ndarray, float]:
    size = self.input_size
    crop = landmarks_lib.crop_image(image, region, size)
    self._interpreter.set_tensor(self._input, (crop.astype(np.float32) / 255.0)[None])
    self._interpreter.invoke()
    raw = self._interpreter.get_tensor(self._points).reshape(HAND_POINTS, 3)[:, :2].astype(np.float64)
    presence = float(self._interpreter.get_tensor(self._presence).reshape(()))
    to_image = landmarks_lib.crop_transform(region, size, inverse=True)
    return (raw @ to_image[:, :2].T + to_image[:, 2]).astype(np.float32), presence


def hand_mask(points_per_hand: Sequence[np.ndarray], height: int, width: int, dilation: float = 0.12) -> np.ndarray:
  """[H, W] float32 {0, 1}: each hand's convex region (its 21 points' hull, every finger bone as a line
  `2 * dilation` of the hand's size wide, the hull's outline as wide), so the region reaches
  `dilation` x the hand's size beyond the points (knuckles and finger edges lie outside them)."""
  canvas = Image.new("L", (width, height), 0)
  draw = ImageDraw.Draw(canvas)
  for points in points_per_hand:
    points = np.asarray(points, np.float64)[:, :2]
    size = float(np.max(points.max(axis=0) - points.min(axis=0)))
    line = max(1, int(round(2 * dilation * size)))
    hull = convex_hull(points)
    draw.polygon([tuple(p) for p in hull], fill=1)
    draw.line([tuple(p) for p in np.concatenate([hull, hull[:1]])], fill=1, width=line, joint="curve")
    for a, b in HAND_BONES:
      draw.line([tuple(points[a]), tuple(points[b])], fill=1, width=line, joint="curve")
    for p in points:
      draw.ellipse([p[0] - line / 2, p[1] - line / 2, p[0] + line / 2, p[1] + line / 2], fill=1)
  return np.asarray(canvas, np.float32)


def convex_hull(points: np.ndarray) -> np.ndarray:
  """[K, 2] hull of [N, 2] points, counter-clockwise (Andrew's monotone chain)."""
  ordered = sorted(map(tuple, points))
  cross = lambda o, a, b: (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])  # noqa: E731
  lower, upper = [], []
  for p in ordered:
    while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
      lower.pop()
    lower.append(p)
  for p in reversed(ordered):
    while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
      upper.pop()
    upper.append(p)
  return np.asarray(lower[:-1] + upper[:-1], np.float64)


class HandOccluder:
  """The hands of a frame as an occluder: [H, W] float32 {0, 1} (`hand_mask` of every hand found)."""

  def __init__(self, palm_model, hand_model, min_presence: float = 0.5, dilation: float = 0.12, max_hands: int = 2):
    self.palms = PalmDetector(palm_model, max_palms=max_hands)
    self.hands = HandLandmarks(hand_model)
    self.min_presence, self.dilation = min_presence, dilation

  def points(self, image: np.ndarray) -> list[np.ndarray]:
    """[21, 2] image points of each hand found (present with probability >= min_presence)."""
    found = []
    for palm in self.palms(image):
      points, presence = self.hands(image, hand_region(palm))
      if presence >= self.min_presence:
        found.append(points)
    return found

  def __call__(self, image: np.ndarray) -> np.ndarray:
    return hand_mask(self.points(image), image.shape[0], image.shape[1], self.dilation)


def _hands(paths: dict) -> tuple[Optional[Occluder], str]:
  palm = model_files.optional_model(model_files.PALM_DETECTOR_FILE, paths.get("palm"))
  hand = model_files.optional_model(model_files.HAND_LANDMARK_FILE, paths.get("hand"))
  if palm is None or hand is None:
    missing = [name for name, path in (("palm_detection_full.tflite", palm), ("hand_landmark_full.tflite", hand))
               if path is None]
    return None, (f"{' and '.join(missing)} not found in {model_files.models_dir()} (fetch with "
                  f"`{model_files.FETCH_COMMAND}`)")
  return HandOccluder(palm, hand), ""


# name -> (model paths by key -> (occluder or None, why it is None)).
OCCLUDER_SOURCES: dict[str, Callable[[dict], tuple[Optional[Occluder], str]]] = {"hands": _hands}


def make_occluders(names: Sequence[str], paths: Optional[dict] = None) -> tuple[list[Occluder], list[str]]:
  """The occluder sources named (`OCCLUDER_SOURCES`), and a message for each that cannot run.

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  made, missing = [], []
  for name in names:
    if name not in OCCLUDER_SOURCES:
      raise ValueError(f"--occluders={name}: unknown occluder source (known: {', '.join(OCCLUDER_SOURCES)})")
    occluder, why = OCCLUDER_SOURCES[name](dict(paths or {}))
    if occluder is None:
      missing.append(f"occluder {name!r} off: {why}")
    else:
      made.append(occluder)
  return made, missing


class OcclusionTracker:
  """The union of the occluder sources on each frame of a video, held over time and feathered.

  Frame t's region is max(union_t, hold * region_{t-1}): a region the sources stop seeing fades out
  over a few frames instead of vanishing (a hand missed on one frame stays in front). The result's
  edge is blurred by `feather` pixels (Gaussian sigma), so the kept input pixels blend into the edit.
  """

  def __init__(self, occluders: Sequence[Occluder], hold: float = 0.6, feather: float = 3.0):
    self.occluders, self.hold, self.feather = list(occluders), hold, feather
    self._previous = None

  def __call__(self, image: np.ndarray) -> Optional[np.ndarray]:
    """[H, W] float32 in [0, 1] for the next frame of the video, or None where nothing occludes."""
    region = None
    for occluder in self.occluders:
      mask = occluder(image)
      region = mask if region is None else np.maximum(region, mask)
    if self._previous is not None and self._previous.shape == image.shape[:2]:
      held = self.hold * self._previous
      region = held if region is None else np.maximum(region, held)
    if region is None or region.max() < 0.1:
      self._previous = None
      return None
    self._previous = region
    if self.feather > 0:
      return np.clip(ndimage.gaussian_filter(region, self.feather), 0.0, 1.0)
    return region
