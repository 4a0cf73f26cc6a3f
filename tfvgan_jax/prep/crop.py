"""One stable square crop per clip, and the mapping between crop and source pixels.

A clip gets a single axis-aligned square for all its frames: its centre is the median over frames of
the centre of the face's landmark box, its side `scale` times the 90th percentile of the box's
larger side, but never larger than the frame's shorter side: talking-head corpora such as
VoxCeleb2 are already tight face crops, and black borders would teach the networks black borders.
A fixed crop keeps the background still (the networks see the head move, not the camera), and the
percentile keeps one bad frame from setting the size. The square is then slid inside the frame, so
every crop pixel is a real one. (`crop_image` fills pixels outside the frame with black for boxes
chosen otherwise; `crop_to_source` maps every crop pixel to where it came from.)

Pixel conventions as everywhere (DESIGN.md): x right, y down, pixel centres at integer + 0.5, so
a crop of side `side` source pixels starting at (x0, y0) maps crop pixel coordinate u to source
x0 + u * side / S.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image

from tfvgan_jax.prep.track import box_of_points, box_size


class CropBox(NamedTuple):
  """A square in source pixels: top-left corner (x0, y0) and side length."""

  x0: float
  y0: float
  side: float


def stable_crop(points: np.ndarray, frame_size: tuple[int, int], scale: float = 1.6) -> CropBox:
  """The clip's crop square from its landmark track.

  Args:
    points: [T, N, >=2] landmarks in source pixels.
    frame_size: (width, height) of the source frames.
    scale: crop side over the face box's side (1.6: the whole face, hair and some background).

  Returns:
    The square, with integer corner and side, inside the frame.
  """
  if scale <= 0:
    raise ValueError(f"crop scale must be > 0, got {scale}")
  boxes = box_of_points(points)
  centres = 0.5 * (boxes[:, :2] + boxes[:, 2:])
  sizes = box_size(boxes)
  side = float(min(np.ceil(scale * np.percentile(sizes, 90)), min(frame_size)))
  centre = np.median(centres, axis=0)
  corner = np.round(centre - side / 2)
  for axis, extent in enumerate(frame_size):
    corner[axis] = np.clip(corner[axis], 0, extent - side)
  return CropBox(float(corner[0]), float(corner[1]), side)


def crop_to_source(box: CropBox, size: int) -> np.ndarray:
  """[2, 3] affine A with source (x, y) = A @ [u, v, 1] for crop coordinates (u, v) at S = size."""
  step = box.side / size
  return np.array([[step, 0.0, box.x0], [0.0, step, box.y0]], np.float32)


def to_crop(points: np.ndarray, box: CropBox, size: int) -> np.ndarray:
  """Source-pixel points [..., 2] -> crop-pixel points (the inverse of `crop_to_source`)."""
  origin = np.array([box.x0, box.y0], np.float32)
  return ((np.asarray(points, np.float32)[..., :2] - origin) * (size / box.side)).astype(np.float32)


def crop_image(image: np.ndarray, box: CropBox, size: int) -> np.ndarray:
  """The box cut from `image` [H, W, 3] uint8 and resized to [size, size, 3] (antialiased).

  Outside the frame the crop is black.
  """
  height, width = image.shape[:2]
  x0, y0, side = int(round(box.x0)), int(round(box.y0)), int(round(box.side))
  inside = (max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height))
  if inside[0] >= inside[2] or inside[1] >= inside[3]:
    return np.zeros((size, size, 3), np.uint8)
  block = image[inside[1]:inside[3], inside[0]:inside[2]]
  if block.shape[:2] != (side, side):
    canvas = np.zeros((side, side, 3), np.uint8)
    canvas[inside[1] - y0:inside[3] - y0, inside[0] - x0:inside[2] - x0] = block
    block = canvas
  if side == size:
    return np.ascontiguousarray(block)
  return np.asarray(Image.fromarray(block).resize((size, size), Image.BILINEAR, reducing_gap=None))
