"""Discriminator D(Y, X_i): pix2pixHD's multi-scale PatchGAN (DESIGN.md choice 6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tfvgan_jax.models.embedder import stage_widths


def _l2_normalize(x: jax.Array) -> jax.Array:
  return x / (jnp.linalg.norm(x) + 1e-12)


class SpectralNormConv(nnx.Module):
  """A 'SAME' conv whose kernel is divided by its largest singular value (Miyato et al. 2018).

  The singular vector u is estimated by one power-iteration step per call and stored only in
  training mode (`module.eval()` freezes it). The kernel Param itself is never rewritten, so the
  optimizer always updates the unnormalized weights.
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: int, strides: int, *, rngs: nnx.Rngs,
               dtype=jnp.float32):
    self.conv = nnx.Conv(in_features, out_features, (kernel_size, kernel_size), strides=strides, rngs=rngs)
    self.dtype = dtype
    self.u = nnx.BatchStat(_l2_normalize(jax.random.normal(rngs.params(), (out_features,))))
    self.strides = strides
    self.use_running_average = False

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C_in] -> [B, H / strides, W / strides, C_out]."""
    kernel = self.conv.kernel[...]
    matrix = kernel.reshape(-1, kernel.shape[-1])
    v = jax.lax.stop_gradient(_l2_normalize(matrix @ self.u[...]))
    u = jax.lax.stop_gradient(_l2_normalize(matrix.T @ v))
    sigma = v @ matrix @ u
    if not self.use_running_average:
      self.u[...] = u
    # The power iteration in float32, the convolution in the compute dtype.
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), (kernel / sigma).astype(self.dtype), (self.strides, self.strides),
                                     'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + self.conv.bias[...].astype(self.dtype)


def _conv(in_features: int, out_features: int, strides: int, spectral_norm: bool, rngs: nnx.Rngs, dtype) -> nnx.Module:
  if spectral_norm:
    return SpectralNormConv(in_features, out_features, 4, strides, rngs=rngs, dtype=dtype)
  return nnx.Conv(in_features, out_features, (4, 4), strides=strides, rngs=rngs, dtype=dtype)


class PatchDiscriminator(nnx.Module):
  """One scale: `layers` 4x4 stride-2 convs with LeakyReLU(0.2), then a 4x4 conv to one logit per patch."""

  def __init__(
      self, in_features: int, *, width: int = 64, layers: int = 3, max_width: int = 512,
      spectral_norm: bool = True, rngs: nnx.Rngs, dtype=jnp.float32,
  ):
    widths = [in_features] + stage_widths(width, layers - 1, max_width)
    self.convs = nnx.List([_conv(widths[i], widths[i + 1], 2, spectral_norm, rngs, dtype) for i in range(layers)])
    self.logits = _conv(widths[-1], 1, 1, spectral_norm, rngs, dtype)

  def __call__(self, x: jax.Array) -> tuple[list[jax.Array], jax.Array]:
    """[B, H, W, C_in] -> (features, logits).

    features: per stride-2 conv i < layers, its activation [B, H / 2^(i+1), W / 2^(i+1), C_i].
    logits: [B, H / 2^layers, W / 2^layers, 1], one per patch.
    Both float32 (the losses' dtype) whatever the convolutions' dtype.
    """
    features = []
    for conv in self.convs:
      x = jax.nn.leaky_relu(conv(x), 0.2)
      features.append(x.astype(jnp.float32))
    return features, self.logits(x).astype(jnp.float32)


class MultiScaleDiscriminator(nnx.Module):
  """`scales` PatchDiscriminators on the input at full, 1/2, 1/4, ... resolution (2x2 average pooling).

  The input is the image concatenated on channels with an optional condition: both papers write
  D(Y, X_i), the identity image as condition, which gives in_features = 6; in_features = 3 and no
  condition is the unconditional D(Y).
  """

  def __init__(
      self, in_features: int = 3, *, width: int = 64, layers: int = 3, scales: int = 3,
      max_width: int = 512, spectral_norm: bool = True, rngs: nnx.Rngs, dtype=jnp.float32,
  ):
    self.in_features = in_features
    self.scales = nnx.List([
        PatchDiscriminator(
            in_features, width=width, layers=layers, max_width=max_width, spectral_norm=spectral_norm, rngs=rngs,
            dtype=dtype)
        for _ in range(scales)
    ])

  def __call__(self, image: jax.Array, condition: jax.Array | None = None) -> list[tuple[list[jax.Array], jax.Array]]:
    """D(image, condition).

    Args:
      image: [B, H, W, 3] in [-1, 1]; H, W divisible by 2^(scales - 1).
      condition: [B, H, W, in_features - 3] or None when in_features == 3.

    Returns:
      Per scale, finest first: (intermediate features for feature matching, patch logits [B, h, w, 1]).
    """
    x = image if condition is None else jnp.concatenate([image, condition], axis=-1)
    if x.shape[-1] != self.in_features:
      raise ValueError(f"discriminator expects {self.in_features} input channels, got {x.shape[-1]}")
    outputs = []
    for index, discriminator in enumerate(self.scales):
      if index:
        batch, height, width, channels = x.shape
        x = x.reshape(batch, height // 2, 2, width // 2, 2, channels).mean(axis=(2, 4))
      outputs.append(discriminator(x))
    return outputs
