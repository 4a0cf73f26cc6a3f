"""Weak-perspective camera: Euler angles <-> rotation matrices, and projection to screen space.

Conventions (fixed project-wide, see DESIGN.md):
  * Screen space: x to the right, y down, in pixels of the crop, pixel centres at integer + 0.5,
    origin at the top-left corner. Depth z grows TOWARD the camera (larger z = nearer).
  * Model space: x to the viewer's right, y up, z toward a frontal viewer (face3d.model).
  * `screen_xy = s * flip_y(R @ v)[:2] + t` and `depth = s * (R @ v).z`, where flip_y negates y so
    that model "up" is screen "up" (smaller y). R = Rz(roll) @ Ry(yaw) @ Rx(pitch).
  * Angles in radians. Positive pitch tips the nose down, positive yaw turns the nose toward screen
    right, positive roll turns the top of the head toward screen left.
  * A camera vector packs [pitch, yaw, roll, scale, tx, ty] (6 numbers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from tfvgan_jax.face3d.model import MorphableModel, vertices

CAMERA_SIZE = 6


@struct.dataclass
class Camera:
  """Weak-perspective camera. Leading dims are a batch.

  Attributes:
    pose: [..., 3] (pitch, yaw, roll) in radians.
    scale: [...] pixels per model unit.
    translation: [..., 2] screen position (pixels) of the model origin.
  """

  pose: jax.Array
  scale: jax.Array
  translation: jax.Array

  def to_vector(self) -> jax.Array:
    """[..., 6]: pitch, yaw, roll, scale, tx, ty."""
    return jnp.concatenate([self.pose, self.scale[..., None], self.translation], axis=-1)

  @classmethod
  def from_vector(cls, vector: jax.Array) -> "Camera":
    vector = jnp.asarray(vector, jnp.float32)
    if vector.shape[-1] != CAMERA_SIZE:
      raise ValueError(f"a camera vector has {CAMERA_SIZE} entries, got shape {vector.shape}")
    return cls(pose=vector[..., 0:3], scale=vector[..., 3], translation=vector[..., 4:6])

  @classmethod
  def create(cls, pitch=0.0, yaw=0.0, roll=0.0, scale=1.0, translation=(0.0, 0.0)) -> "Camera":
    return cls(
        pose=jnp.stack(jnp.broadcast_arrays(*map(jnp.asarray, (pitch, yaw, roll))), -1).astype(jnp.float32),
        scale=jnp.asarray(scale, jnp.float32),
        translation=jnp.asarray(translation, jnp.float32),
    )


def euler_to_matrix(pose: jax.Array) -> jax.Array:
  """Rotation matrices R = Rz(roll) @ Ry(yaw) @ Rx(pitch).

  Args:
    pose: [..., 3] (pitch, yaw, roll) in radians.

  Returns:
    [..., 3, 3] rotation matrices.
  """
  pose = jnp.asarray(pose, jnp.float32)
  cx, cy, cz = (jnp.cos(pose[..., i]) for i in range(3))
  sx, sy, sz = (jnp.sin(pose[..., i]) for i in range(3))
  rows = [
      [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
      [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
      [-sy, cy * sx, cy * cx],
  ]
  return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_euler(rotation: jax.Array) -> jax.Array:
  """Inverse of `euler_to_matrix`: [..., 3, 3] -> [..., 3] (pitch, yaw, roll).

  Yaw is returned in [-pi/2, pi/2]. At gimbal lock (|yaw| = pi/2) roll is set to 0 and the whole
  in-plane rotation is reported as pitch.
  """
  r = jnp.asarray(rotation, jnp.float32)
  cos_yaw = jnp.sqrt(r[..., 0, 0] ** 2 + r[..., 1, 0] ** 2)
  yaw = jnp.arctan2(-r[..., 2, 0], cos_yaw)
  locked = cos_yaw < 1e-6
  pitch = jnp.where(locked, jnp.arctan2(-r[..., 1, 2], r[..., 1, 1]), jnp.arctan2(r[..., 2, 1], r[..., 2, 2]))
  roll = jnp.where(locked, 0.0, jnp.arctan2(r[..., 1, 0], r[..., 0, 0]))
  return jnp.stack([pitch, yaw, roll], axis=-1)


def project(vertices: jax.Array, camera: Camera) -> jax.Array:
  """Weak-perspective projection of model-space points to screen space.

  Args:
    vertices: [..., N, 3] model-space points.
    camera: a `Camera` whose leading dims broadcast with `vertices`' leading dims.

  Returns:
    [..., N, 3]: screen x, y (pixels, y down) and depth z (larger = nearer the camera).
  """
  rotation = euler_to_matrix(camera.pose)
  rotated = jnp.einsum("...ij,...nj->...ni", rotation, vertices)
  scale = jnp.asarray(camera.scale)[..., None, None]
  flip = jnp.array([1.0, -1.0, 1.0], jnp.float32)
  offset = jnp.concatenate([camera.translation, jnp.zeros_like(camera.translation[..., :1])], axis=-1)
  return scale * flip * rotated + offset[..., None, :]


def project_face(model: MorphableModel, id_coeffs: jax.Array, exp_coeffs: jax.Array, camera: jax.Array) -> jax.Array:
  """Screen-space vertices of a (possibly recombined) face: eq. 3/4's shape seen by a camera.

  Args:
    model: the morphable model.
    id_coeffs: [..., K_id]; exp_coeffs: [..., K_exp], from the same face or (recombination) not.
    camera: [..., 6] camera vectors.

  Returns:
    [..., N, 3] screen x, y (pixels) and depth, as `project`.
  """
  return project(vertices(model, id_coeffs, exp_coeffs), Camera.from_vector(camera))
