"""The render R, the facial mask M^ and the appearance hint M (UniFaceGAN eq. 5 and §III-B,
TFVGAN eq. 3; texture transfer as DESIGN.md choice 5).

R textures the recombined face per pixel from the identity image X_i: the pixel's triangle and
barycentrics name a point of the face surface; the same point of the identity frame's own mesh,
projected with the identity frame's camera, is sampled bilinearly in X_i. Points hidden in X_i (by
X_i's own z-buffer) have no texture and are masked out. No UV atlas, full resolution at any mesh
density.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tfvgan_jax.render.rasterize import Fragments, interpolate_attributes, rasterize, visible
from tfvgan_jax.render.sampling import bilinear_sample


class FaceRender(NamedTuple):
  """The renderer's outputs for one target frame.

  Attributes:
    render: [H, W, C] R, the face textured from X_i; `fill` where there is no texture.
    face_mask: [H, W, 1] float32 M^: 1 where the recombined face covers the pixel.
    texture_valid: [H, W] bool, face pixels whose surface point is visible in X_i.
    fragments: the target frame's fragments.
    identity_fragments: X_i's own mesh's fragments at X_i's size (its z-buffer).
  """

  render: jax.Array
  face_mask: jax.Array
  texture_valid: jax.Array
  fragments: Fragments
  identity_fragments: Fragments


def surface_points(fragments: Fragments, screen_vertices: jax.Array, triangles: jax.Array) -> jax.Array:
  """For each pixel, the point with the pixel's triangle and barycentrics on another frame's mesh.

  Args:
    fragments: fragments of the frame that names the points, [H, W].
    screen_vertices: [N, 3] the mesh (same topology) in the frame where the points are wanted.
    triangles: [F, 3].

  Returns:
    [H, W, 3] screen x, y, depth in that frame (zero where `fragments.mask` is False).
  """
  return interpolate_attributes(fragments, screen_vertices, triangles)


def transfer_texture(
    fragments: Fragments,
    identity_screen: jax.Array,
    triangles: jax.Array,
    identity_image: jax.Array,
    identity_fragments: Fragments,
    tolerance: float = 0.5,
    fill: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
  """R = P(S, T^i, C^p) (TFVGAN eq. 3, UniFaceGAN eq. 5) with the texture read from X_i directly.

  Args:
    fragments: fragments of the recombined mesh S in the target camera C^p, [H, W].
    identity_screen: [N, 3] the identity frame's own mesh S^i projected with its camera C^i.
    triangles: [F, 3] shared topology.
    identity_image: [Hi, Wi, C] X_i.
    identity_fragments: fragments of `identity_screen` at X_i's size, for its z-buffer.
    tolerance: depth slack of the visibility test in X_i (see `render.visible`).
    fill: value of R where the face has no visible texture in X_i and outside the face.

  Returns:
    render [H, W, C] and texture_valid [H, W] bool.
  """
  points = surface_points(fragments, identity_screen, triangles)
  colors = bilinear_sample(identity_image, points[..., 0], points[..., 1])
  seen = visible(identity_fragments, identity_screen, triangles, points, tolerance)
  valid = fragments.mask & seen
  return jnp.where(valid[..., None], colors, fill), valid


def face_mask(fragments: Fragments) -> jax.Array:
  """M^: [..., H, W, 1] float32, 1 on the face (pixels the mesh covers), 0 elsewhere."""
  return fragments.mask[..., None].astype(jnp.float32)


def appearance_hint(image: jax.Array, mask: jax.Array) -> jax.Array:
  """M = X (1 - M^): the image with the face cut out (UniFaceGAN §III-B).

  Swapping passes X_p (M = X_p(1 - M^)); reenactment passes X_i (M = X_i(1 - M^)).

  Args:
    image: [..., H, W, C]; mask: [..., H, W, 1] M^.
  """
  return image * (1.0 - mask)


def render_face(
    target_screen: jax.Array,
    identity_screen: jax.Array,
    triangles: jax.Array,
    identity_image: jax.Array,
    height: int,
    width: int,
    tolerance: float = 0.5,
    fill: float = 0.0,
    **raster_kwargs,
) -> FaceRender:
  """Rasterizes the recombined face, textures it from X_i and returns R, M^ and the fragments.

  Leading batch dims [...] are allowed on every array input (the same on all of them); the
  meshes are rasterized as one batch (see `rasterize`).

  Args:
    target_screen: [..., N, 3] recombined mesh S projected with C^p.
    identity_screen: [..., N, 3] identity frame's own mesh S^i projected with C^i.
    triangles: [F, 3].
    identity_image: [..., Hi, Wi, C] X_i.
    height, width: size of the target frame.
    tolerance, fill: see `transfer_texture`.
    **raster_kwargs: passed to `rasterize` (chunk, capacity, group).
  """
  batch_shape = target_screen.shape[:-2]
  fragments = rasterize(target_screen, triangles, height, width, **raster_kwargs)
  ih, iw = identity_image.shape[-3:-1]
  identity_fragments = rasterize(identity_screen, triangles, ih, iw, **raster_kwargs)
  transfer = functools.partial(transfer_texture, triangles=triangles, tolerance=tolerance, fill=fill)
  for _ in batch_shape:
    transfer = jax.vmap(transfer)
  render, valid = transfer(fragments, identity_screen=identity_screen, identity_image=identity_image,
                           identity_fragments=identity_fragments)
  return FaceRender(render, face_mask(fragments), valid, fragments, identity_fragments)
