"""Differentiable bilinear sampling in screen coordinates (pixel centres at integer + 0.5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bilinear_sample(image: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
  """Samples `image` at continuous screen positions, clamping to the border.

  Args:
    image: [H, W, C].
    x, y: [...] screen coordinates; the centre of pixel (row i, column j) is (j + 0.5, i + 0.5).

  Returns:
    [..., C]; differentiable in the image and in x, y.
  """
  height, width = image.shape[:2]
  u = jnp.clip(x - 0.5, 0.0, width - 1.0)
  v = jnp.clip(y - 0.5, 0.0, height - 1.0)
  u0 = jnp.clip(jnp.floor(u), 0, max(width - 2, 0)).astype(jnp.int32)
  v0 = jnp.clip(jnp.floor(v), 0, max(height - 2, 0)).astype(jnp.int32)
  u1 = jnp.minimum(u0 + 1, width - 1)
  v1 = jnp.minimum(v0 + 1, height - 1)
  fu = (u - u0)[..., None]
  fv = (v - v0)[..., None]
  top = image[v0, u0] * (1 - fu) + image[v0, u1] * fu
  bottom = image[v1, u0] * (1 - fu) + image[v1, u1] * fu
  return top * (1 - fv) + bottom * fv


def pixel_centers(height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """Screen x, y of every pixel centre: two [H, W] arrays."""
  x = jnp.arange(width, dtype=jnp.float32) + 0.5
  y = jnp.arange(height, dtype=jnp.float32) + 0.5
  return jnp.broadcast_to(x[None, :], (height, width)), jnp.broadcast_to(y[:, None], (height, width))
