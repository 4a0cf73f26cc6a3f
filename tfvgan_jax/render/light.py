"""Shading of a textured face: second-order spherical-harmonic light fitted to an image, and the
re-shading of R from the light of the frame its texture comes from to the light of the frame it
is pasted into.

R takes its colours from X_i, so it carries X_i's shading at X_i's pose: turned to another pose,
or pasted into another video, the face keeps the light of the wrong frame. Under a Lambertian
surface lit from afar, a pixel's intensity is albedo x shading(normal), and the shading of any
distant light is close to a second-order spherical-harmonic function of the normal (Ramamoorthi
and Hanrahan 2001, "An efficient representation for irradiance environment maps"; the same
model fits the illumination in 3DMM face reconstruction, e.g. Deng et al. 2019). Fitting it to a
frame's face pixels (their normals from the fitted mesh, their intensities from the image) gives
that frame's light up to the face's mean albedo; `shading_ratio` divides X_i's shading out of R
and multiplies the target's in. Each shading is divided by its mean over R's pixels, so that the
ratio changes where the face is lit, not how bright its skin is: the mean albedo is the
identity's and stays X_i's.

Normals are those of the mesh in screen space (x right, y down, z toward the camera), as
`vertex_normals` computes them from screen vertices; light and normals only meet in this space.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tfvgan_jax.render.rasterize import Fragments, interpolate_attributes

# Real spherical harmonics of bands 0-2 (Ramamoorthi and Hanrahan 2001, eq. 3): the constants of
# Y00; Y1-1, Y10, Y11; Y2-2, Y2-1, Y21; Y20; Y22.
_SH_CONSTANTS = (0.282095, 0.488603, 1.092548, 0.315392, 0.546274)
SH_TERMS = 9


def vertex_normals(screen_vertices: jax.Array, triangles: jax.Array) -> jax.Array:
  """[..., N, 3] unit vertex normals of a mesh in screen space (x right, y down, z toward the
  camera, `face3d.project`), each the area-weighted sum of its triangles' normals.

  The screen transform flips y, which reverses the triangles' winding: the cross product of the
  screen edges of a face seen from the front points away from the camera, so its sign is turned
  (a frontal face's normals have z > 0). Vertices of no triangle get a zero normal.
  """
  corners = jnp.take(screen_vertices, triangles, axis=-2)  # [..., F, 3, 3]
  face = -jnp.cross(corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :])
  summed = jnp.zeros_like(screen_vertices)
  for k in range(3):
    summed = summed.at[..., triangles[:, k], :].add(face)
  norm = jnp.linalg.norm(summed, axis=-1, keepdims=True)
  return summed / jnp.where(norm > 0, norm, 1.0)


def pixel_normals(fragments: Fragments, normals: jax.Array, triangles: jax.Array) -> jax.Array:
  """[H, W, 3] unit normals at each pixel's surface point: `normals` [N, 3] (of the mesh that
  `fragments` names points of, in any frame) interpolated with the fragments' barycentrics; 0 off
  the mesh."""
  interpolated = interpolate_attributes(fragments, normals, triangles)
  norm = jnp.linalg.norm(interpolated, axis=-1, keepdims=True)
  return jnp.where(norm > 0, interpolated / jnp.where(norm > 0, norm, 1.0), 0.0)


def sh_basis(normals: jax.Array) -> jax.Array:
  """[..., 9] the real spherical harmonics of bands 0-2 at unit normals [..., 3]."""
  x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
  c0, c1, c2, c3, c4 = _SH_CONSTANTS
  return jnp.stack([jnp.full_like(x, c0), c1 * y, c1 * z, c1 * x, c2 * x * y, c2 * y * z,
                    c3 * (3 * z * z - 1), c2 * x * z, c4 * (x * x - y * y)], axis=-1)


def fit_sh_light(normals: jax.Array, intensity: jax.Array, weight: jax.Array, ridge: float = 1e-2) -> jax.Array:
  """The light L [9] whose shading sh_basis(n) . L is nearest the intensities, by weighted least
  squares with a ridge on bands 1-2: argmin sum_p w_p (Y(n_p) . L - I_p)^2 + ridge W sum_k>0 L_k^2,
  W = sum_p w_p (so that the ridge does not depend on the face's size in pixels).

  Args:
    normals: [P, 3] unit normals (any leading pixel axes are flattened).
    intensity: [P] the pixels' intensities (albedo x shading).
    weight: [P] >= 0, e.g. the face pixels that see the surface.
    ridge: the prior toward a uniform light: a face shows only the normals that face the camera,
      so the bands are not all determined by it.

  Returns:
    [9] float32; zeros when every weight is 0.
  """
  basis = sh_basis(normals.reshape(-1, 3))
  w = weight.reshape(-1).astype(jnp.float32)
  values = intensity.reshape(-1).astype(jnp.float32)
  total = jnp.sum(w)
  prior = ridge * jnp.maximum(total, 1e-6) * jnp.diag(jnp.array([0.0] + [1.0] * (SH_TERMS - 1), jnp.float32))
  gram = jnp.einsum("p,pi,pj->ij", w, basis, basis) + prior + 1e-6 * jnp.eye(SH_TERMS)
  light = jnp.linalg.solve(gram, jnp.einsum("p,pi,p->i", w, basis, values))
  return jnp.where(total > 0, light, 0.0)


def shading(light: jax.Array, normals: jax.Array) -> jax.Array:
  """[...] the shading sh_basis(n) . L of a light [9] at normals [..., 3]."""
  return jnp.einsum("...k,k->...", sh_basis(normals), light)


def shading_ratio(source_light: jax.Array, source_normals: jax.Array, target_light: jax.Array,
                  target_normals: jax.Array, weight: jax.Array, limits: tuple[float, float] = (0.25, 4.0)) -> jax.Array:
  """[...] the factor that takes a texture lit by `source_light` at `source_normals` to
  `target_light` at `target_normals` (the same surface points, e.g. in X_i's frame and in the
  target's), each shading divided by its mean over the points (weighted by `weight`):

      ratio = (Y(n_t) . L_t / mean_w Y(n_t) . L_t) / (Y(n_s) . L_s / mean_w Y(n_s) . L_s),

  clipped to `limits` (a texel lit near zero or a normal the fit did not see cannot be trusted
  beyond them). The means keep the texture's mean brightness over the points: where the face is
  lit changes, how bright its skin is does not (a face shows few normals, so a fit cannot tell a
  bright uniform light from a dim one toward the camera). 1 where either shading's mean is not
  positive (nothing was fitted).
  """
  w = jnp.asarray(weight, jnp.float32)
  total = jnp.maximum(jnp.sum(w), 1e-6)

  def normalized(light, normals):
    values = shading(light, normals)
    mean = jnp.sum(w * values) / total
    return values / jnp.where(mean > 1e-6, mean, 1.0), mean > 1e-6

  target, target_ok = normalized(target_light, target_normals)
  source, source_ok = normalized(source_light, source_normals)
  ratio = jnp.clip(target / jnp.maximum(source, 1e-3), *limits)
  return jnp.where(target_ok & source_ok, ratio, 1.0)


def luminance(image: jax.Array) -> jax.Array:
  """[..., H, W] the mean of an image's channels (any range)."""
  return jnp.mean(image, axis=-1)
