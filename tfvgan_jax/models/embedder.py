"""Appearance embedder E(X_p, M) -> P (UniFaceGAN §III-C, TFVGAN §3.3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def stage_widths(width: int, stages: int, max_width: int) -> list[int]:
  """Channel widths [width, 2 width, 4 width, ...] capped at max_width, one per resolution."""
  return [min(width * 2**i, max_width) for i in range(stages + 1)]


class AppearanceEmbedder(nnx.Module):
  """Maps the appearance frame and its hint to a low-resolution appearance feature map P.

  A 7x7 conv, then `downsamples` 4x4 stride-2 convs, each followed by LeakyReLU(0.2). There is no
  normalization: instance norm would erase the per-channel colour statistics of the background,
  which are what the generator's RCN layers transfer.
  """

  def __init__(self, *, width: int = 64, downsamples: int = 4, max_width: int = 512, rngs: nnx.Rngs,
               dtype=jnp.float32):
    widths = stage_widths(width, downsamples, max_width)
    self.stem = nnx.Conv(6, widths[0], (7, 7), rngs=rngs, dtype=dtype)
    self.down = nnx.List([
        nnx.Conv(widths[i], widths[i + 1], (4, 4), strides=2, rngs=rngs, dtype=dtype) for i in range(downsamples)
    ])
    self.out_features = widths[-1]

  def __call__(self, appearance_image: jax.Array, hint: jax.Array) -> jax.Array:
    """E(X_p, M).

    Args:
      appearance_image: X_p [B, H, W, 3] in [-1, 1].
      hint: M [B, H, W, 3] in [-1, 1], the appearance hint image.

    Returns:
      P [B, H / 2^downsamples, W / 2^downsamples, out_features], float32 whatever the convolutions' dtype.
    """
    x = jax.nn.leaky_relu(self.stem(jnp.concatenate([appearance_image, hint], axis=-1)), 0.2)
    for conv in self.down:
      x = jax.nn.leaky_relu(conv(x), 0.2)
    return x.astype(jnp.float32)
