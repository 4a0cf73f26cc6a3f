"""The linear 3D morphable model: S = mean + A_id a_id + A_exp a_exp.

Model space is right-handed with x to the face's left (the viewer's right), y up and z out of the
face toward a frontal viewer, as in the Basel Face Model; `face3d.camera.project` maps it to screen
space (x right, y down, depth growing toward the camera).

Coefficients are in units of the population standard deviation: a_id ~ N(0, I) and
a_exp ~ N(0, I) are the priors of every model file this project writes (converters fold each
source model's coefficient scale into its bases).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct

# iBUG-68 outer eye corners, the subject's right eye's then the left eye's: the inter-ocular
# distance and the eye line of a face's 68 landmarks (`MorphableModel.landmarks` order).
IBUG68_OUTER_EYE_CORNERS = (36, 45)


@struct.dataclass
class MorphableModel:
  """A linear face model (a frozen pytree; `name` and `licence` are static metadata).

  Attributes:
    mean: [N, 3] float32, the mean shape S-bar.
    id_basis: [N, 3, K_id] float32, identity principal axes A_id (per unit of std).
    exp_basis: [N, 3, K_exp] float32, expression axes A_exp (per unit of std).
    triangles: [F, 3] int32 vertex indices.
    landmarks: [68] int32 vertex indices in iBUG-68 order.
    albedo: optional [N, 3] float32 per-vertex colour in [0, 1].
    name: short identifier, recorded by datasets fitted with this model.
    licence: the licence the model's data is under.
  """

  mean: jax.Array
  id_basis: jax.Array
  exp_basis: jax.Array
  triangles: jax.Array
  landmarks: jax.Array
  albedo: Optional[jax.Array] = None
  name: str = struct.field(pytree_node=False, default="unnamed")
  licence: str = struct.field(pytree_node=False, default="unknown")

  @property
  def num_vertices(self) -> int:
    return self.mean.shape[0]

  @property
  def num_triangles(self) -> int:
    return self.triangles.shape[0]

  @property
  def num_id(self) -> int:
    return self.id_basis.shape[-1]

  @property
  def num_exp(self) -> int:
    return self.exp_basis.shape[-1]


def vertices(model: MorphableModel, id_coeffs: jax.Array, exp_coeffs: jax.Array) -> jax.Array:
  """Mesh vertices of the recombined face (UniFaceGAN eq. 3/4; TFVGAN eq. 1/2).

  S = S-bar + A_id a_id + A_exp a_exp. With a_id from one face and a_exp from another this is the
  recombination of eq. 4 (eq. 2 in TFVGAN).

  Args:
    model: the morphable model.
    id_coeffs: [..., K_id] identity coefficients.
    exp_coeffs: [..., K_exp] expression coefficients; leading dims broadcast with `id_coeffs`.

  Returns:
    [..., N, 3] vertices in model space.
  """
  id_coeffs = jnp.asarray(id_coeffs, jnp.float32)
  exp_coeffs = jnp.asarray(exp_coeffs, jnp.float32)
  if id_coeffs.shape[-1] != model.num_id:
    raise ValueError(f"id_coeffs has {id_coeffs.shape[-1]} entries, model {model.name!r} has K_id={model.num_id}")
  if exp_coeffs.shape[-1] != model.num_exp:
    raise ValueError(f"exp_coeffs has {exp_coeffs.shape[-1]} entries, model {model.name!r} has K_exp={model.num_exp}")
  shape_offset = jnp.einsum("nck,...k->...nc", model.id_basis, id_coeffs)
  exp_offset = jnp.einsum("nck,...k->...nc", model.exp_basis, exp_coeffs)
  return model.mean + shape_offset + exp_offset
