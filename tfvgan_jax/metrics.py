"""Evaluation metrics as pure functions of arrays: SSIM and the temporal warping error E_tmp.

Images are NHWC floats in [0, max_value] (SSIM) or [0, 1] (E_tmp); generator outputs in [-1, 1]
go through `to_unit_range` first. Per-sample functions return [B] so that callers can aggregate
over a whole evaluation set themselves; the unsuffixed ones return the batch mean.

Everything here is jit-safe with static shapes; `filter_size` must be static under jit, as it sets
the shape of the SSIM window.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tfvgan_jax.render import warp


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
  return jnp.mean(luminance * structure, axis=(1, 2, 3))


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
  output_t = jnp.asarray(output_t, jnp.float32)
  squared = jnp.square(output_t - warp(jnp.asarray(output_prev, jnp.float32), jnp.asarray(flow, jnp.float32)))
  weight = jnp.asarray(mask, jnp.float32)[..., None]
  count = jnp.sum(weight, axis=(1, 2, 3)) * output_t.shape[-1]
  total = jnp.sum(weight * squared, axis=(1, 2, 3))
  return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


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
