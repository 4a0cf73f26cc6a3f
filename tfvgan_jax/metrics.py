"""Evaluation metrics of TFVGAN §4 / UniFaceGAN §IV-A as pure functions of arrays.

  SSIM               `ssim`                          Wang et al. 2004
  E_tmp              `temporal_warping_error`        with the 3D flow of `render.dense_flow`
                     `temporal_error_optical_flow`   with OpenCV flow, where no 3D flow exists
  FID                `fid`, `frechet_distance`       Heusel et al. 2017, on features of an ONNX
                                                     Inception (`onnx_models.inception_network`)
  E_id               `identity_error`, `identity_similarity`  cosine of face embeddings
  E_pose             `pose_error`, `pose_error_per_angle`     Euler angles in degrees
  E_exp              `expression_error`              2D landmark distance
  Table I            `results_table`                 markdown and JSON

Images are NHWC floats in [0, max_value] (SSIM) or [0, 1] (E_tmp); generator outputs in [-1, 1]
go through `to_unit_range` first. Per-sample functions return [B] (per-frame ones [T]) so that
callers can aggregate over a whole evaluation set themselves; the unsuffixed ones return the mean.

The JAX functions are jit-safe with static shapes; `filter_size` must be static under jit, as it
sets the shape of the SSIM window. FID (SciPy's matrix square root), the optical flow (OpenCV) and
the results table run in NumPy on the host and return Python values.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Optional

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from tfvgan_jax import face3d
from tfvgan_jax.render import warp, warping_error_per_sample


def to_unit_range(images: jax.Array) -> jax.Array:
  """Maps [-1, 1] images (the generator's range) to [0, 1], clipping what falls outside.

  Args:
    images: [...] float.

  Returns:
    [...] float32 in [0, 1].
  """
  return jnp.clip((jnp.asarray(images, jnp.float32) + 1.0) * 0.5, 0.0, 1.0)


# SSIM (Wang, Bovik, Sheikh & Simoncelli 2004).


def _gaussian_window(size: int, sigma: float | jax.Array) -> jax.Array:
  """[size] normalized 1D Gaussian centred on the middle tap (between two taps for an even size)."""
  coords = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
  g = jnp.exp(-jnp.square(coords) / (2.0 * jnp.square(jnp.asarray(sigma, jnp.float32))))
  return g / jnp.sum(g)


def _separable_valid_filter(images: jax.Array, window: jax.Array) -> jax.Array:
  """Filters each channel of [B, H, W, C] with window x window^T, 'valid' -> [B, H-k+1, W-k+1, C]."""
  channels = images.shape[-1]
  size = window.shape[0]
  # Depthwise (one group per channel) so that the channels never mix; HIGHEST keeps float32
  # accuracy on accelerators that would otherwise use reduced-precision (TF32/bf16) convolutions.
  conv = lambda x, kernel: jax.lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding="VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=channels, precision=jax.lax.Precision.HIGHEST)
  rows = jnp.broadcast_to(window.reshape(size, 1, 1, 1), (size, 1, 1, channels))
  cols = jnp.broadcast_to(window.reshape(1, size, 1, 1), (1, size, 1, channels))
  return conv(conv(images, rows), cols)


def ssim_per_sample(
    x: jax.Array,
    y: jax.Array,
    max_value: float = 1.0,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    mask: jax.Array | None = None,
) -> jax.Array:
  """The mean SSIM of Wang et al. 2004 per sample.

  Local statistics use a normalized Gaussian window (11 x 11, sigma 1.5 by default) with 'valid'
  filtering, i.e. only window positions fully inside the image, and population (not sample)
  variances, as in the paper; the SSIM map is averaged over those positions and the channels.
  When an image is smaller than the filter, the window shrinks to min(filter_size, H, W) taps with
  the same sigma (as tf.image.ssim does), so that at least one position remains.

  Args:
    x, y: [B, H, W, C] in [0, max_value].
    max_value: the dynamic range L, which sets C1 = (k1 L)^2 and C2 = (k2 L)^2.
    filter_size: taps of the square window; static under jit.
    filter_sigma: the Gaussian's standard deviation in pixels.
    k1, k2: the stabilizing constants of the paper.
    mask: [B, H, W] weights (e.g. a face mask) of the window positions by their centre pixel, for
      the SSIM of a region: the map is averaged with these weights instead of uniformly (a sample
      whose weights are all 0 gives 0).

  Returns:
    [B] float32; 1 for identical images.
  """
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.shape != y.shape or x.ndim != 4:
    raise ValueError(f"expected two [B, H, W, C] images of the same shape, got {x.shape} and {y.shape}")
  size = min(filter_size, x.shape[1], x.shape[2])
  window = _gaussian_window(size, filter_sigma)
  # One convolution for all five moments rather than five dispatches.
  moments = _separable_valid_filter(jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), window)
  mu_x, mu_y, xx, yy, xy = jnp.split(moments, 5, axis=-1)
  var_x = xx - jnp.square(mu_x)
  var_y = yy - jnp.square(mu_y)
  cov = xy - mu_x * mu_y
  c1 = jnp.square(k1 * max_value)
  c2 = jnp.square(k2 * max_value)
  luminance = (2.0 * mu_x * mu_y + c1) / (jnp.square(mu_x) + jnp.square(mu_y) + c1)
  structure = (2.0 * cov + c2) / (var_x + var_y + c2)
  ssim_map = jnp.mean(luminance * structure, axis=-1)
  if mask is None:
    return jnp.mean(ssim_map, axis=(1, 2))
  # A valid position i covers pixels i .. i + size - 1; its centre is pixel i + (size - 1) // 2.
  start = (size - 1) // 2
  weights = jnp.asarray(mask, jnp.float32)[:, start:start + ssim_map.shape[1], start:start + ssim_map.shape[2]]
  return jnp.sum(ssim_map * weights, axis=(1, 2)) / jnp.maximum(jnp.sum(weights, axis=(1, 2)), 1e-12)


def mean_squared_error_per_sample(x: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean squared difference per sample, over the pixels of `mask` when given.

  Args:
    x, y: [B, H, W, C].
    mask: [B, H, W] pixel weights (a region), or None for the whole image.

  Returns:
    [B] float32 (0 for a sample whose mask is empty).
  """
  squared = jnp.mean(jnp.square(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)), axis=-1)
  if mask is None:
    return jnp.mean(squared, axis=(1, 2))
  mask = jnp.asarray(mask, jnp.float32)
  return jnp.sum(squared * mask, axis=(1, 2)) / jnp.maximum(jnp.sum(mask, axis=(1, 2)), 1e-12)


def psnr_per_sample(x: jax.Array, y: jax.Array, max_value: float = 1.0, mask: jax.Array | None = None) -> jax.Array:
  """Peak signal-to-noise ratio per sample in dB, 10 log10(L^2 / MSE), over `mask`'s pixels when given.

  Args:
    x, y: [B, H, W, C] in [0, max_value].
    max_value: the dynamic range L.
    mask: [B, H, W] pixel weights, or None.

  Returns:
    [B] float32; identical images give 10 log10(L^2 / 1e-10) = 100 dB for L = 1 (the MSE is
    floored at 1e-10) rather than infinity.
  """
  error = mean_squared_error_per_sample(x, y, mask)
  return 10.0 * jnp.log10(max_value ** 2 / jnp.maximum(error, 1e-10))


def ssim(x: jax.Array, y: jax.Array, **options) -> jax.Array:
  """The batch mean of `ssim_per_sample` (same arguments), [] float32."""
  return jnp.mean(ssim_per_sample(x, y, **options))


# Temporal warping error (Lai et al. 2018, "Learning blind video temporal consistency"; TFVGAN [37]).


def temporal_warping_error_per_sample(
    output_t: jax.Array, output_prev: jax.Array, flow: jax.Array, mask: jax.Array) -> jax.Array:
  """E_tmp per sample: the mean over masked pixels and channels of (Y^t - warp(Y^{t-1}, F))^2.

  The previous frame is backward-warped (`render.warp` samples it at q + F(q)) so that it aligns
  with frame t; the mask keeps only pixels where the flow is valid, since occluded or disoccluded
  pixels have no correspondence to be consistent with.

  Args:
    output_t, output_prev: [B, H, W, C] frames t and t-1 in [0, 1].
    flow: [B, H, W, 2] in pixels, from frame t to frame t-1.
    mask: [B, H, W] bool, the pixels compared.

  Returns:
    [B] float32; 0 for a sample with no masked pixel.
  """
  return warping_error_per_sample(jnp.asarray(output_t, jnp.float32), jnp.asarray(output_prev, jnp.float32),
                                  jnp.asarray(flow, jnp.float32), mask)


def temporal_warping_error(
    output_t: jax.Array, output_prev: jax.Array, flow: jax.Array, mask: jax.Array) -> jax.Array:
  """E_tmp averaged over the samples with at least one masked pixel, 0 when there is none.

  Samples without a masked pixel are left out rather than counted as 0, which would reward
  frames whose flow is invalid everywhere.

  Args:
    output_t, output_prev, flow, mask: as `temporal_warping_error_per_sample`.

  Returns:
    [] float32.
  """
  values = temporal_warping_error_per_sample(output_t, output_prev, flow, mask)
  has_pixels = jnp.any(jnp.asarray(mask, bool).reshape(values.shape[0], -1), axis=1).astype(jnp.float32)
  count = jnp.sum(has_pixels)
  return jnp.where(count > 0, jnp.sum(has_pixels * values) / jnp.maximum(count, 1.0), 0.0)


def mean_over_samples_with_flow(values, flow_pixels) -> float:
  """The mean of per-sample E_tmp values over the samples with at least one valid flow pixel (0
  when none has one): `temporal_warping_error`'s rule, for values gathered on the host."""
  values, has_flow = np.asarray(values), np.asarray(flow_pixels) > 0
  return float(np.mean(values[has_flow])) if has_flow.any() else 0.0


# Temporal error with an estimated optical flow (TFVGAN Table 3: face swapping has no 3D flow).

# Farneback's parameters, named as in `cv2.calcOpticalFlowFarneback`: a classical pyramid (each
# level half the size) of 4 levels, so that motions of a few pixels at the coarsest level (tens at
# full resolution) are found; a 15-pixel averaging window; 3 iterations per level; polynomial
# expansion over 5 x 5 neighbourhoods with a Gaussian of sigma 1.2 (OpenCV's advice for poly_n 5 is
# 1.1 - 1.2); flags 0: box averaging window, no initial flow.
FARNEBACK_PARAMETERS = dict(pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def _grayscale(frame: np.ndarray, name: str) -> np.ndarray:
  """[H, W, 3] uint8 RGB -> [H, W] uint8 luma (ITU-R BT.601 weights, as OpenCV's RGB2GRAY)."""
  frame = np.asarray(frame)
  if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
    raise ValueError(f"{name}: expected an [H, W, 3] uint8 RGB frame, got {frame.dtype} {frame.shape}")
  return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def optical_flow_farneback(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
  """The backward optical flow from frame t to frame t-1, estimated by Farneback's algorithm (OpenCV).

  Same convention as the 3D flow of `render.dense_flow` (DESIGN.md choice 2): the flow lives on the
  frame-t pixel grid and points from a pixel q at t to where its content was at t-1, so that
  current(q) ~ previous(q + flow(q)) and `render.warp(previous, flow)` aligns frame t-1 with frame
  t. Content that moved by (+dx, +dy) from t-1 to t has flow (-dx, -dy). OpenCV finds, for its
  first image I, the flow with I(q) ~ J(q + flow(q)), hence it is called with (current, previous).
  Both frames are converted to grayscale; `FARNEBACK_PARAMETERS` lists the settings.

  The papers extract this flow with OpenCV's TV-L1 (TFVGAN Table 3), which lives in the
  opencv-contrib `optflow` module; Farneback is in OpenCV's main module. The two estimators give
  different values, so E_tmp numbers are comparable only when computed with the same one.

  Args:
    previous, current: [H, W, 3] uint8 RGB frames t-1 and t.

  Returns:
    [H, W, 2] float32 (x, y) in pixels, x right, y down.
  """
  if np.shape(previous) != np.shape(current):
    raise ValueError(f"frames t-1 and t differ in shape: {np.shape(previous)} and {np.shape(current)}")
  flow = cv2.calcOpticalFlowFarneback(
      _grayscale(current, "frame t"), _grayscale(previous, "frame t-1"), None, **FARNEBACK_PARAMETERS)
  return flow.astype(np.float32)


def flow_consistency_mask(
    flow_backward: jax.Array, flow_forward: jax.Array, alpha1: float = 0.01, alpha2: float = 0.5) -> jax.Array:
  """Pixels of frame t whose backward flow is confirmed by the forward flow (Sundaram et al. 2010).

  For a pixel centre q at t, the backward flow b = flow_backward(q) leads to p = q + b at t-1, and
  the forward flow read there (bilinear), f = flow_forward(p), should lead back: b + f ~ 0. The test

    |b + f|^2 <= alpha1 (|b|^2 + |f|^2) + alpha2

  tolerates an error that grows with the motion; pixels whose p falls outside frame t-1
  (disoccluded at the border) are invalid too. Occluded and disoccluded pixels fail the round trip.

  Args:
    flow_backward: [H, W, 2] on the frame-t grid, from t to t-1 (`optical_flow_farneback(prev, cur)`).
    flow_forward: [H, W, 2] on the frame-(t-1) grid, from t-1 to t (`optical_flow_farneback(cur, prev)`).
    alpha1, alpha2: the relative and absolute tolerances (pixels^2) of the test.

  Returns:
    [H, W] bool.
  """
  flow_backward = jnp.asarray(flow_backward, jnp.float32)
  height, width = flow_backward.shape[:2]
  forward_there = warp(jnp.asarray(flow_forward, jnp.float32), flow_backward)
  round_trip = jnp.sum(jnp.square(flow_backward + forward_there), axis=-1)
  speed = jnp.sum(jnp.square(flow_backward), axis=-1) + jnp.sum(jnp.square(forward_there), axis=-1)
  tolerance = alpha1 * speed + alpha2
  x = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5 + flow_backward[..., 0]
  y = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5 + flow_backward[..., 1]
  inside = (x >= 0.0) & (x <= width) & (y >= 0.0) & (y <= height)
  return (round_trip <= tolerance) & inside


def temporal_error_optical_flow(frames: np.ndarray, mask: str = "consistent",
                                flow_frames: Optional[np.ndarray] = None) -> float:
  """E_tmp of a video with Farneback's flow in place of the 3D flow, for outputs without a mesh.

  Every pair of consecutive frames (t-1, t) gets the backward flow of `optical_flow_farneback`,
  estimated on `flow_frames` when given (Lai et al.'s protocol: the flow of the input video, so
  that output changes the input's motion does not explain count as flicker), else on `frames`
  themselves; then E_tmp is `temporal_warping_error` on frames scaled to [0, 1]: the mean squared difference
  between frame t and frame t-1 warped to it, over the compared pixels and the channels, averaged
  over the pairs that have a compared pixel. The papers tabulate E_tmp at a scale they do not state
  (3.54 for TFVGAN's swaps); this is the plain mean squared error of [0, 1] images.

  Args:
    frames: [T, H, W, 3] uint8 RGB, T >= 2.
    mask: which pixels are compared: 'consistent' (`flow_consistency_mask` of the backward and the
      forward flow; this costs a second flow per pair) or 'all'.
    flow_frames: optional [T, H, W, 3] uint8 frames the flow is estimated on (e.g. the input of an
      edit, same shape as `frames`).

  Returns:
    E_tmp, float; 0 for a static video.
  """
  frames = np.asarray(frames)
  source = frames if flow_frames is None else np.asarray(flow_frames)
  if source.shape != frames.shape:
    raise ValueError(f"flow_frames {source.shape} and frames {frames.shape} differ in shape")
  if frames.ndim != 4 or frames.shape[0] < 2:
    raise ValueError(f"temporal_error_optical_flow takes [T, H, W, 3] frames with T >= 2, got {frames.shape}")
  if mask not in ("consistent", "all"):
    raise ValueError(f"mask must be 'consistent' or 'all', got {mask!r}")
  flows, masks = [], []
  for previous, current in zip(source[:-1], source[1:]):
    backward = optical_flow_farneback(previous, current)
    flows.append(backward)
    if mask == "consistent":
      masks.append(np.asarray(flow_consistency_mask(backward, optical_flow_farneback(current, previous))))
    else:
      masks.append(np.ones(backward.shape[:2], bool))
  unit = frames.astype(np.float32) / 255.0
  return float(temporal_warping_error(unit[1:], unit[:-1], np.stack(flows), np.stack(masks)))


# Fréchet Inception distance (Heusel et al. 2017; TFVGAN [31], UniFaceGAN [34]).


def activation_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The mean and covariance of a set of network activations: the Gaussian that FID fits to them.

  Args:
    features: [N, D] with N >= 2, one row per image (e.g. `onnx_models.inception_network` outputs).

  Returns:
    mu [D] and sigma [D, D], float64; sigma is the unbiased sample covariance (divides by N - 1),
    as the reference FID implementations compute it.
  """
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"activation_statistics takes [N, D] features with N >= 2, got shape {features.shape}")
  mu = features.mean(axis=0)
  centred = features - mu
  return mu, centred.T @ centred / (features.shape[0] - 1)


def _matrix_square_root(matrix: np.ndarray) -> np.ndarray | None:
  """SciPy's principal square root of `matrix`, or None when it is non-finite or inaccurate."""
  with warnings.catch_warnings():
    # The residual test below replaces SciPy's warning about singular input.
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    root = scipy.linalg.sqrtm(matrix)
  if not np.all(np.isfinite(root)):
    return None
  residual = np.linalg.norm(root @ root - matrix)
  return root if residual <= 1e-6 * max(np.linalg.norm(matrix), 1e-12) else None


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
  """The Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2):

    d^2 = |mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2))

  (the squared 2-Wasserstein distance; FID when the Gaussians are `activation_statistics` of
  Inception features). sigma1 sigma2 is similar to the positive semi-definite
  sigma1^(1/2) sigma2 sigma1^(1/2), so its principal square root has a real, non-negative spectrum;
  the small imaginary parts that SciPy's Schur method leaves are rounding and are dropped. When the
  product is singular (typically fewer samples than feature dimensions) the root can come out
  non-finite or wrong (|root^2 - product| > 1e-6 |product|): then eps * I is added to both
  covariances and the root is taken again, which moves d^2 by about eps * D.

  Args:
    mu1, mu2: [D] means.
    sigma1, sigma2: [D, D] covariances, symmetric positive semi-definite.
    eps: the diagonal offset used when the product is singular.

  Returns:
    d^2 >= 0 (up to rounding), float.

  Raises:
    ValueError: on mismatched shapes, or when the root's diagonal keeps an imaginary part above
      1e-3, i.e. the inputs are not covariances.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  dims = mu1.shape[0]
  if mu1.shape != (dims,) or mu2.shape != (dims,) or sigma1.shape != (dims, dims) or sigma2.shape != (dims, dims):
    raise ValueError(f"frechet_distance: expected means [D] and covariances [D, D], got {mu1.shape}, "
                     f"{sigma1.shape}, {mu2.shape}, {sigma2.shape}")
  root = _matrix_square_root(sigma1 @ sigma2)
  if root is None:
    offset = eps * np.eye(dims)
    root = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(root):
    largest = np.max(np.abs(np.diagonal(root).imag))
    if largest > 1e-3:
      raise ValueError(f"frechet_distance: the square root of sigma1 sigma2 has an imaginary part of {largest:.3g} "
                       "on its diagonal; are sigma1 and sigma2 covariance matrices?")
    root = root.real
  difference = mu1 - mu2
  return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(root))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """FID: `frechet_distance` between the `activation_statistics` of two feature sets.

  TFVGAN computes it between the outputs Y and the identity images X_i. The standard value needs
  the features of pytorch-fid's Inception (`onnx_models.inception_network`); features of another
  network give a Fréchet distance that is not comparable with published FIDs. FID is biased
  upward for small N: compare values computed with the same number of images.

  Args:
    features_a, features_b: [N_a, D] and [N_b, D], N >= 2 each.

  Returns:
    float.
  """
  return frechet_distance(*activation_statistics(features_a), *activation_statistics(features_b))


# Identity: cosine similarity of face-recognition embeddings (TFVGAN [33] CosFace; E_id).


def identity_similarity_per_sample(embeddings_a: jax.Array, embeddings_b: jax.Array) -> jax.Array:
  """Cosine similarity of paired face embeddings.

  Args:
    embeddings_a, embeddings_b: [N, D], row n of one paired with row n of the other (e.g. the
      output Y and the identity image X_i; `onnx_models.face_recognition_network` features).

  Returns:
    [N] float32 in [-1, 1]; 0 for a zero embedding.
  """
  a = jnp.asarray(embeddings_a, jnp.float32)
  b = jnp.asarray(embeddings_b, jnp.float32)
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f"expected two [N, D] embeddings of the same shape, got {a.shape} and {b.shape}")
  norms = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
  return jnp.sum(a * b, axis=-1) / jnp.maximum(norms, 1e-12)


def identity_similarity(embeddings_a: jax.Array, embeddings_b: jax.Array) -> jax.Array:
  """The mean of `identity_similarity_per_sample`, [] float32; higher is better."""
  return jnp.mean(identity_similarity_per_sample(embeddings_a, embeddings_b))


def identity_error(embeddings_a: jax.Array, embeddings_b: jax.Array) -> jax.Array:
  """E_id = 1 - mean cosine similarity, [] float32 in [0, 2]; lower is better.

  The papers say E_id "is evaluated in the cosine similarity" but mark it lower-is-better (Table
  I, with values 0.10 - 1.31), so the reported quantity is read here as the cosine distance.
  """
  return 1.0 - identity_similarity(embeddings_a, embeddings_b)


# Pose error E_pose: Euler angles of the output against the pose driver (TFVGAN [34], Hopenet).


def fitted_identity_per_sample(fitted, source, target) -> dict:
  """Whose identity a face carries, from fitted morphable-model coefficients (no recognition network).

  The output video is fitted with the same per-clip fitter as the inputs (one identity per clip),
  and its identity coefficients are compared with the source's (the identity that was asked for)
  and the target's (the one being replaced). What this sees is face SHAPE as the landmark fitter
  recovers it (jaw, nose, eye and mouth geometry of the 68 points); it is blind to skin, texture,
  hair and everything a recognition network keys on, and it is only as sharp as the fit: the
  fitter's prior pulls weakly constrained coefficients toward the mean, so differences are
  compressed, and two people of similar shape are not told apart.

  Args:
    fitted, source, target: [N, K_id] identity coefficients (rows with NaN give NaN).

  Returns:
    {'margin': [N] ||fitted - target|| - ||fitted - source|| (Euclidean, coefficient units; positive:
     closer to the source), 'cosine_source', 'cosine_target': [N] cosine similarity of the fitted
     coefficients with the source's and the target's}.
  """
  fitted, source, target = (np.asarray(a, np.float64) for a in (fitted, source, target))
  margin = np.linalg.norm(fitted - target, axis=-1) - np.linalg.norm(fitted - source, axis=-1)
  return {"margin": margin,
          "cosine_source": np.asarray(identity_similarity_per_sample(fitted, source), np.float64),
          "cosine_target": np.asarray(identity_similarity_per_sample(fitted, target), np.float64)}


def landmark_identity_per_sample(output_points, target_points, expected_shift, valid, subset=None) -> dict:
  """Whose face shape an output carries, read where the target's own frames put the face.

  `fitted_identity_per_sample` compares a fit of the output with a fit of the source's own video,
  whose poses and expressions differ, and a per-clip fitter takes part of a clip's poses and
  expressions for identity: on real clips, an output that carries the source's fitted shape
  exactly (the scene R + M of a swap) came out nearer the source for only 20-30% of the swaps.
  Here nothing is compared across poses. A swap keeps the target's frames' pose and expression,
  so what it should change in each frame is the shift the morphable model predicts from the
  target's shape to the source's in that frame's fitted expression and camera:

    shift_t = project(S(id_source, exp_t), cam_t) - project(S(id_target, exp_t), cam_t)

  and the output's points are compared with the target's detected points L_t and with L_t + shift_t:

    margin   = mean |Y_t - L_t| - mean |Y_t - (L_t + shift_t)|    (inter-ocular distances of L_t;
               positive: nearer the swapped face than the unchanged target)
    transfer = sum <Y_t - L_t, shift_t> / sum |shift_t|^2         (0: the target's shape unchanged,
               1: the source's whole shape difference carried)

  Like the fitted measure it sees face shape from landmarks, not skin or texture, and the shift is
  only as good as the two identities fitted to the inputs; two people of similar shape give a small
  shift that detection noise buries.

  Args:
    output_points, target_points, expected_shift: [N, T, 68, 2] iBUG-68 points in pixels; the
      target's outer eye corners (36, 45) give each frame's inter-ocular distance.
    valid: [N, T] bool, the frames detected in both the output and the target.
    subset: indices of the points compared (e.g. the inner face without the jaw line); default all.

  Returns:
    {'margin': [N], 'transfer': [N]} float64, NaN for samples without a valid frame.
  """
  output_points, target_points, expected_shift = (np.asarray(a, np.float64)
                                                   for a in (output_points, target_points, expected_shift))
  if not output_points.shape == target_points.shape == expected_shift.shape or output_points.ndim != 4:
    raise ValueError(f"expected three [N, T, L, 2] point arrays of one shape, got {output_points.shape}, "
                     f"{target_points.shape} and {expected_shift.shape}")
  if output_points.shape[2] != 68:
    raise ValueError(f"landmark_identity_per_sample takes iBUG-68 points, got {output_points.shape[2]}")
  valid = np.asarray(valid, bool)
  right, left = face3d.IBUG68_OUTER_EYE_CORNERS
  eyes = np.linalg.norm(target_points[:, :, right] - target_points[:, :, left], axis=-1)
  subset = np.arange(68) if subset is None else np.asarray(subset)
  moved = (output_points - target_points)[:, :, subset]
  expected_shift = expected_shift[:, :, subset]
  to_target = np.linalg.norm(moved, axis=-1).mean(-1) / eyes
  to_swap = np.linalg.norm(moved - expected_shift, axis=-1).mean(-1) / eyes
  frames = valid.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    margin = np.where(valid, to_target - to_swap, 0.0).sum(axis=1) / frames
    projected = np.where(valid[..., None, None], moved * expected_shift, 0.0).sum(axis=(1, 2, 3))
    norm = np.where(valid[..., None, None], expected_shift ** 2, 0.0).sum(axis=(1, 2, 3))
    transfer = projected / norm
  none = frames == 0
  return {"margin": np.where(none, np.nan, margin), "transfer": np.where(none | (norm <= 0), np.nan, transfer)}


def pose_difference_degrees(cameras_a: jax.Array, cameras_b: jax.Array) -> jax.Array:
  """Per-frame signed differences of (pitch, yaw, roll), in degrees, wrapped into [-180, 180).

  Args:
    cameras_a, cameras_b: [T, 6] (or [T, 7]) camera vectors [pitch, yaw, roll, scale, tx, ty, ...]
      with the angles in radians, as `face3d.Camera.from_vector` reads them; only the angles are used.

  Returns:
    [T, 3] float32: a - b, so that 179 deg against -179 deg differs by -2 deg, not 358.
  """
  a = jnp.asarray(cameras_a, jnp.float32)
  b = jnp.asarray(cameras_b, jnp.float32)
  if a.shape != b.shape or a.ndim != 2 or a.shape[-1] < 3:
    raise ValueError(f"expected two [T, 6] camera vectors of the same shape, got {a.shape} and {b.shape}")
  difference = jnp.rad2deg(a[:, :3] - b[:, :3])
  return jnp.mod(difference + 180.0, 360.0) - 180.0


def pose_error_per_angle(cameras_a: jax.Array, cameras_b: jax.Array) -> jax.Array:
  """E_pose as the papers tabulate it: the mean over frames of |difference| per angle, in degrees.

  The papers call E_pose "the Euclidean distance between the Euler angles" yet report it as a
  (pitch, yaw, roll) triple; a Euclidean distance of one angle is its absolute difference.

  Args:
    cameras_a, cameras_b: as `pose_difference_degrees` (output Y and pose driver X_p).

  Returns:
    [3] float32: (pitch, yaw, roll) errors in degrees.
  """
  return jnp.mean(jnp.abs(pose_difference_degrees(cameras_a, cameras_b)), axis=0)


def pose_error(cameras_a: jax.Array, cameras_b: jax.Array) -> jax.Array:
  """E_pose as one number: the mean over frames of the Euclidean norm of the angle differences.

  Args:
    cameras_a, cameras_b: as `pose_difference_degrees`.

  Returns:
    [] float32, degrees.
  """
  return jnp.mean(jnp.linalg.norm(pose_difference_degrees(cameras_a, cameras_b), axis=-1))


# Expression error E_exp: 2D landmarks of the output against the expression driver (TFVGAN [35]).

# Eye points that set the inter-ocular distance: iBUG-68 outer eye corners, MTCNN's 5-point eye centres.
# Outer eye corners of 68-point (iBUG) and 5-point (MTCNN) landmark sets.
_EYE_POINTS = {68: face3d.IBUG68_OUTER_EYE_CORNERS, 5: (0, 1)}


def similarity_align(source: jax.Array, target: jax.Array) -> jax.Array:
  """Moves each frame's `source` points onto `target` by the least-squares similarity transform.

  Per frame, with p and q the points centred on their means, the rotation-and-scale minimising
  sum |c p - q|^2 is, in complex numbers (z = x + i y), c = sum conj(p) q / sum |p|^2; the
  result is c p + mean(q). No reflection is allowed.

  Args:
    source, target: [T, L, 2].

  Returns:
    [T, L, 2] float32.
  """
  source = jnp.asarray(source, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  target_mean = jnp.mean(target, axis=1, keepdims=True)
  p = source - jnp.mean(source, axis=1, keepdims=True)
  q = target - target_mean
  energy = jnp.maximum(jnp.sum(jnp.square(p), axis=(1, 2)), 1e-12)
  cos_part = jnp.sum(p[..., 0] * q[..., 0] + p[..., 1] * q[..., 1], axis=1) / energy
  sin_part = jnp.sum(p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0], axis=1) / energy
  c, s = cos_part[:, None], sin_part[:, None]
  rotated = jnp.stack([c * p[..., 0] - s * p[..., 1], s * p[..., 0] + c * p[..., 1]], axis=-1)
  return rotated + target_mean


def expression_error_per_frame(
    landmarks_a: jax.Array, landmarks_b: jax.Array, normalize: str = "none", align: bool = False) -> jax.Array:
  """E_exp per frame: the mean over landmarks of the Euclidean distance between paired 2D points.

  The papers take "the Euclidean distance between the 2D landmarks" of the expression driver X_e
  and the output Y, detected by MTCNN (5 points); any L works here (iBUG-68 from `prep`). As in
  the papers the points are compared where they are: in swapping and reenactment X_e = X_p, so
  the output should match the driver's pose too. `align=True` first removes a 2D similarity
  transform (`similarity_align` of a onto b), for drivers whose pose differs from the output's
  (fully disentangled manipulation). `normalize='inter_ocular'` divides by the reference's
  inter-ocular distance (iBUG-68 outer eye corners 36 and 45; 5-point eye centres 0 and 1), which
  makes the number independent of the crop size; 'none' keeps pixels.

  Args:
    landmarks_a: [T, L, 2] points of the output Y, in pixels.
    landmarks_b: [T, L, 2] the reference (expression driver X_e), same order.
    normalize: 'none' or 'inter_ocular' (L = 68 or 5); static under jit.
    align: whether to align a onto b first; static under jit.

  Returns:
    [T] float32, pixels or inter-ocular distances.
  """
  a = jnp.asarray(landmarks_a, jnp.float32)
  b = jnp.asarray(landmarks_b, jnp.float32)
  if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 2:
    raise ValueError(f"expected two [T, L, 2] landmark tracks of the same shape, got {a.shape} and {b.shape}")
  if normalize not in ("none", "inter_ocular"):
    raise ValueError(f"normalize must be 'none' or 'inter_ocular', got {normalize!r}")
  if normalize == "inter_ocular" and a.shape[1] not in _EYE_POINTS:
    raise ValueError(f"normalize='inter_ocular' needs iBUG-68 or 5-point landmarks, got {a.shape[1]} points")
  if align:
    a = similarity_align(a, b)
  distances = jnp.mean(jnp.linalg.norm(a - b, axis=-1), axis=-1)
  if normalize == "inter_ocular":
    first, second = _EYE_POINTS[b.shape[1]]
    distances = distances / jnp.maximum(jnp.linalg.norm(b[:, first] - b[:, second], axis=-1), 1e-12)
  return distances


def expression_error(
    landmarks_a: jax.Array, landmarks_b: jax.Array, normalize: str = "none", align: bool = False) -> jax.Array:
  """The mean over frames of `expression_error_per_frame` (same arguments), [] float32."""
  return jnp.mean(expression_error_per_frame(landmarks_a, landmarks_b, normalize=normalize, align=align))


# The results table in the layout of TFVGAN Table 1 / UniFaceGAN Table I.

# key -> (column label, whether higher is better), in the papers' column order.
METRIC_COLUMNS = {
    "fid": ("FID", False),
    "ssim": ("SSIM", True),
    "e_id": ("E_id", False),
    "e_pose": ("E_pose", False),
    "e_exp": ("E_exp", False),
    "e_tmp": ("E_tmp", False),
}
TABLE_I_COLUMNS = ("fid", "ssim", "e_id", "e_pose", "e_exp")


def _table_value(method: str, key: str, value) -> float | list[float] | None:
  """A table entry as a float, a list of floats (E_pose's triple), or None when missing (None or NaN)."""
  if value is None:
    return None
  array = np.asarray(value, np.float64)
  if array.ndim > 1:
    raise ValueError(f"results_table: {method!r} {key}: expected a number or a 1D sequence, got shape {array.shape}")
  if np.any(np.isnan(array)):
    return None
  return float(array) if array.ndim == 0 else array.tolist()


def results_table(
    rows: Mapping[str, Mapping[str, float | Sequence[float] | None]],
    columns: Sequence[str] = TABLE_I_COLUMNS,
    decimals: int = 2,
) -> tuple[str, str]:
  """A comparison table in the papers' layout: one row per method, metrics in the papers' order.

  Column headers carry an arrow: up when higher is better (SSIM), down otherwise. A metric that a
  row lacks (absent, None or NaN) shows as '-', as SSIM does for face swapping in Table 1. E_pose
  may be one number (`pose_error`) or the papers' (pitch, yaw, roll) triple (`pose_error_per_angle`).

  Args:
    rows: {method: {metric key: value}}, methods in display order; keys from `METRIC_COLUMNS`.
    columns: the metric keys shown, in order; `TABLE_I_COLUMNS` by default, add 'e_tmp' for the
      ablation tables.
    decimals: digits after the decimal point in the markdown; a nonzero value smaller than
      10^-decimals is written with three significant digits instead.

  Returns:
    markdown: a GitHub table, methods in the first column.
    json: {"columns": [{"key", "label", "higher_is_better"}], "rows": [{"method", <key>: value}]}
      with missing values as null and unrounded numbers.
  """
  for key in columns:
    if key not in METRIC_COLUMNS:
      raise ValueError(f"results_table: unknown column {key!r}; known: {', '.join(METRIC_COLUMNS)}")
  for method, metrics_of_method in rows.items():
    unknown = sorted(set(metrics_of_method) - set(METRIC_COLUMNS))
    if unknown:
      raise ValueError(
          f"results_table: row {method!r} has unknown metrics {unknown}; known: {', '.join(METRIC_COLUMNS)}")

  table = {method: {key: _table_value(method, key, values.get(key)) for key in columns}
           for method, values in rows.items()}

  def number(value: float) -> str:
    # Small values (E_tmp is ~1e-4) keep three significant digits instead of rounding to 0.00.
    if value != 0 and abs(value) < 10.0 ** -decimals:
      return f"{value:.3g}"
    return f"{value:.{decimals}f}"

  def cell(value: float | list[float] | None) -> str:
    if value is None:
      return "-"
    if isinstance(value, list):
      return "(" + ", ".join(number(v) for v in value) + ")"
    return number(value)

  headers = ["Method"] + [f"{METRIC_COLUMNS[key][0]} {'↑' if METRIC_COLUMNS[key][1] else '↓'}" for key in columns]
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" + "---:|" * len(columns)]
  for method, values in table.items():
    lines.append("| " + " | ".join([method] + [cell(values[key]) for key in columns]) + " |")
  document = {
      "columns": [{"key": key, "label": METRIC_COLUMNS[key][0], "higher_is_better": METRIC_COLUMNS[key][1]}
                  for key in columns],
      "rows": [{"method": method, **values} for method, values in table.items()],
  }
  return "\n".join(lines) + "\n", json.dumps(document, indent=2, ensure_ascii=False)
