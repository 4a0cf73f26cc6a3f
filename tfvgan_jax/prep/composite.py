"""Putting an edited face crop back into its source frame, and labelling the result as synthetic.

Editing works on square crops (`prep.crop`); the generated crop goes back into the full frame with a
soft mask, so the seam between generated and real pixels fades over a few pixels instead of showing
an edge.

Pixel conventions as everywhere (DESIGN.md): x right, y down, pixel centres at integer + 0.5, origin
at the top-left corner of the top-left pixel. A crop of side S is placed in the frame by the [2, 3]
affine A of `prep.crop.crop_to_source`: source (x, y) = A @ [u, v, 1] for crop coordinates (u, v)
in the same convention, so crop pixel [j, i] covers u in [i, i + 1), v in [j, j + 1). Images are
indexed [row, column] = [y, x].
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage


def feathered_mask(mask: np.ndarray, feather: float) -> np.ndarray:
  """A blend mask that is 0 at and outside the border of `mask` and 1 well inside it.

  The construction, with r = ceil(feather) and the mask taken as 0 outside the crop (so a mask that
  reaches the crop's edge fades there too):
    1. erode: each pixel takes the minimum of the mask over the (2r + 1) x (2r + 1) square around it;
    2. blur: a Gaussian of sigma = feather / 2, truncated to the same square (2 sigma) and
       renormalised, applied along x then y.
  The blur reaches exactly as far as the erosion shrank, so the result is never above the mask (0
  wherever the mask is 0), and it is exactly 1 wherever the mask is 1 over the (4r + 1) square
  around a pixel; the ramp in between is a Gaussian edge centred r pixels inside the border.

  Args:
    mask: [S, S] bool or float in [0, 1], 1 on the face.
    feather: width of the ramp in crop pixels; 0 returns the mask as float.

  Returns:
    [S, S] float32 in [0, 1].
  """
  mask = np.asarray(mask, np.float32)
  if mask.ndim != 2:
    raise ValueError(f"the mask must be [S, S], got shape {mask.shape}")
  if feather < 0:
    raise ValueError(f"feather must be >= 0 pixels, got {feather}")
  if feather == 0:
    return mask.copy()
  radius = math.ceil(feather)
  eroded = ndimage.minimum_filter(mask, size=2 * radius + 1, mode="constant", cval=0.0)
  taps = np.arange(-radius, radius + 1, dtype=np.float32)
  kernel = np.exp(-0.5 * (taps / (feather / 2))**2)
  kernel /= kernel.sum()
  blurred = ndimage.correlate1d(eroded, kernel, axis=1, mode="constant", cval=0.0)
  blurred = ndimage.correlate1d(blurred, kernel, axis=0, mode="constant", cval=0.0)
  return np.clip(blurred, 0.0, 1.0)


def paste_back(frame: np.ndarray, crop: np.ndarray, crop_to_source: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """`frame * (1 - m) + crop * m` with the crop and its mask warped into the frame.

  Each frame pixel centre (x, y) is mapped back to crop coordinates (u, v) = A^-1 (x, y) (inverse
  warping, so no holes), where crop and mask are sampled bilinearly (their pixel centres at +0.5;
  clamped at the crop's edge; the warped crop rounded to uint8). The mask counts as 0 outside the
  crop square [0, S)^2, so pixels the crop does not cover keep their values; only the frame pixels
  in the bounding box of the warped support of the mask are computed (3-5 ms for a 512 x 512
  frame, a 256 crop from a 300-pixel box and a face mask). With `prep.crop.crop_to_source` this is the inverse of
  `prep.crop.crop_image`: crop, paste back with mask 1, and the box is restored (exactly when the
  crop was not resized, to interpolation error otherwise).

  Args:
    frame: [H, W, 3] uint8 source frame.
    crop: [S, S, 3] uint8 edited crop.
    crop_to_source: [2, 3] affine A, source (x, y) = A @ [u, v, 1].
    mask: [S, S] float in [0, 1], e.g. from `feathered_mask`.

  Returns:
    [H, W, 3] uint8, a new array.
  """
  frame = np.asarray(frame)
  crop = np.asarray(crop)
  size = crop.shape[0]
  if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
    raise ValueError(f"paste_back: the frame must be [H, W, 3] uint8, got {frame.shape} {frame.dtype}")
  if crop.dtype != np.uint8 or crop.shape != (size, size, 3):
    raise ValueError(f"paste_back: the crop must be [S, S, 3] uint8, got {crop.shape} {crop.dtype}")
  if np.shape(mask) != (size, size):
    raise ValueError(f"paste_back: the mask must be [{size}, {size}] like the crop, got {np.shape(mask)}")
  mask = np.asarray(mask, np.float32)
  result = frame.copy()
  # Only the frame pixels that can get a weight > 0 are computed: those whose crop coordinates lie
  # within half a pixel (the reach of bilinear sampling) of a mask pixel > 0.
  rows, cols = np.flatnonzero((mask > 0).any(axis=1)), np.flatnonzero((mask > 0).any(axis=0))
  if not rows.size:
    return result
  u0, u1 = max(cols[0] - 0.5, 0.0), min(cols[-1] + 1.5, size)
  v0, v1 = max(rows[0] - 0.5, 0.0), min(rows[-1] + 1.5, size)
  affine = np.asarray(crop_to_source, np.float64)
  linear, offset = affine[:, :2], affine[:, 2]
  corners = np.array([[u0, v0], [u1, v0], [u0, v1], [u1, v1]]) @ linear.T + offset
  height, width = frame.shape[:2]
  x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
  x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int), [width, height])
  if x0 >= x1 or y0 >= y1:
    return result
  # PIL's affine transform maps each output pixel centre through the given affine and samples there
  # bilinearly with centres at +0.5, clamped inside the image and 0 outside it: the sampling above,
  # in C. Output pixel (x', y') of the region is frame pixel (x0 + x', y0 + y').
  inverse = np.linalg.inv(linear)
  shift = inverse @ (np.array([x0, y0], np.float64) - offset)
  coefficients = (*inverse[0], shift[0], *inverse[1], shift[1])
  region_size = (int(x1 - x0), int(y1 - y0))
  warped = Image.fromarray(crop).transform(region_size, Image.AFFINE, coefficients, Image.BILINEAR)
  weight = Image.fromarray(mask).transform(region_size, Image.AFFINE, coefficients, Image.BILINEAR)
  region = result[y0:y1, x0:x1]
  blend = np.asarray(warped, np.float32) - region
  blend *= np.clip(np.asarray(weight), 0.0, 1.0)[..., None]
  blend += region
  region[...] = np.rint(blend, out=blend)
  return result


_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def label_synthetic(frame: np.ndarray, text: str = "SYNTHETIC", position: str = "bottom-right") -> np.ndarray:
  """`frame` [H, W, 3] uint8 with a visible label in one corner: white text on a black box.

  The text is PIL's default font at 4% of the frame height (at least 10 px), the box inset by 2% of
  the height from the frame's edges.

  Args:
    position: "top-left", "top-right", "bottom-left" or "bottom-right".

  Returns:
    A new [H, W, 3] uint8 array; `frame` is left as it was.
  """
  if position not in _CORNERS:
    raise ValueError(f"label position must be one of {_CORNERS}, got {position!r}")
  image = Image.fromarray(np.asarray(frame, np.uint8))
  height = image.height
  font = ImageFont.load_default(size=max(10, round(0.04 * height)))
  margin, pad = max(2, round(0.02 * height)), max(1, round(0.01 * height))
  draw = ImageDraw.Draw(image)
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
  x = margin if position.endswith("left") else image.width - margin - box_w
  y = margin if position.startswith("top") else height - margin - box_h
  draw.rectangle((x, y, x + box_w - 1, y + box_h - 1), fill=(0, 0, 0))
  draw.text((x + pad - left, y + pad - top), text, font=font, fill=(255, 255, 255))
  return np.array(image)
