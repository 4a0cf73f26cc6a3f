"""Dense 3D flow between two rendered frames of the same mesh, and the backward warp that uses it.

TFVGAN eq. 9-14 / UniFaceGAN eq. 11-16, with the sign fixed by DESIGN.md choice 2: the flow lives
on the frame-t pixel grid and points from a pixel at t to where its surface point was at t-1
(flow = -W in the papers' notation, since Q(t-1) = Q(t) - W).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tfvgan_jax.render.rasterize import Fragments, interpolate_attributes, visible
from tfvgan_jax.render.sampling import bilinear_sample, pixel_centers


def vertex_displacement(fragments_t: Fragments, screen_t: jax.Array, screen_prev: jax.Array, triangles: jax.Array) -> jax.Array:
  """W(t -> t-1) at each pixel: barycentric interpolation of V^t - V^{t-1} (TFVGAN eq. 9, UniFaceGAN eq. 11).

  Args:
    fragments_t: fragments of frame t, [H, W].
    screen_t, screen_prev: [N, 3] screen vertices of the same mesh at t and t-1.
    triangles: [F, 3].

  Returns:
    [H, W, 3] screen-space displacement (x, y, depth); zero on background.
  """
  return interpolate_attributes(fragments_t, screen_t - screen_prev, triangles)


def dense_flow(
    screen_t: jax.Array,
    screen_prev: jax.Array,
    triangles: jax.Array,
    fragments_t: Fragments,
    fragments_prev: Fragments,
    tolerance: float = 0.5,
) -> tuple[jax.Array, jax.Array]:
  """The dense flow F(t -> t-1) with visibility (TFVGAN eq. 9-14, UniFaceGAN eq. 11-16).

  For a pixel centre q at t with visible surface point Q^t = (q, Q_z^t) (eq. 10/12), its position
  at t-1 is Q^{t-1} = Q^t - W (eq. 12/14). The flow is valid where Q is visible at t (S^t, eq.
  11/13: holds wherever the mesh covers q, since Q_z^t is read from the winning triangle) and
  visible at t-1 (S^{t-1}, eq. 13/15, read from the t-1 z-buffer at Q^{t-1}), and zero elsewhere
  (eq. 14/16).

  Args:
    screen_t, screen_prev: [N, 3] screen vertices of the same mesh at t and t-1.
    triangles: [F, 3].
    fragments_t, fragments_prev: their fragments, [H, W] each.
    tolerance: depth slack of the t-1 visibility test (see `render.visible`).

  Returns:
    flow [H, W, 2]: from each pixel at t to where its surface point was at t-1 (= -W[..., :2]);
      a mesh that moved by (+dx, +dy) from t-1 to t has flow (-dx, -dy).
    valid [H, W] bool: S^t * S^{t-1}.
  """
  displacement = vertex_displacement(fragments_t, screen_t, screen_prev, triangles)
  x, y = pixel_centers(*fragments_t.triangle_id.shape)
  q_t = jnp.stack([x, y, fragments_t.depth], axis=-1)
  q_prev = q_t - displacement
  visible_t = fragments_t.mask
  visible_prev = visible(fragments_prev, screen_prev, triangles, jnp.where(visible_t[..., None], q_prev, 0.0))
  valid = visible_t & visible_prev
  flow = jnp.where(valid[..., None], -displacement[..., :2], 0.0)
  return flow, valid


def warp(image_prev: jax.Array, flow: jax.Array) -> jax.Array:
  """Backward warp: samples `image_prev` at q + flow(q) for each pixel centre q (DESIGN.md choice 2).

  With `flow` from `dense_flow`, the result is frame t-1 aligned to frame t: on valid pixels it
  should equal frame t where nothing but the motion changed.

  Args:
    image_prev: [..., H, W, C].
    flow: [..., H, W, 2] in pixels.

  Returns:
    [..., H, W, C]; bilinear, differentiable in both inputs; positions outside the image read the
    nearest border pixel.
  """
  if image_prev.ndim > 3:
    return jax.vmap(warp)(image_prev, flow)
  x, y = pixel_centers(*flow.shape[:2])
  return bilinear_sample(image_prev, x + flow[..., 0], y + flow[..., 1])


def warping_error_per_sample(frame_t: jax.Array, frame_prev: jax.Array, flow: jax.Array, mask: jax.Array) -> jax.Array:
  """mean over masked pixels and channels of (frame_t - warp(frame_prev, flow))^2, per sample.

  The temporal loss (TFVGAN eq. 15 / UniFaceGAN eq. 17, `losses.temporal_loss_per_sample`) and the
  temporal warping error E_tmp (`metrics.temporal_warping_error_per_sample`) are this one quantity.

  Args:
    frame_t, frame_prev: [B, H, W, C] frames t and t-1.
    flow: [B, H, W, 2] in pixels, from frame t to frame t-1 (`dense_flow`).
    mask: [B, H, W] bool, the pixels compared.

  Returns:
    [B] float32; 0 for a sample with no masked pixel.
  """
  squared = jnp.square(frame_t - warp(frame_prev, flow))
  weight = jnp.asarray(mask, jnp.float32)[..., None]
  count = jnp.sum(weight, axis=(1, 2, 3)) * frame_t.shape[-1]
  total = jnp.sum(weight * squared, axis=(1, 2, 3))
  return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)
