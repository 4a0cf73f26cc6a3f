"""The device mesh and how arrays are laid out on it.

One `jax.make_mesh` with axes ('data', 'fsdp'): a batch is split over both axes; a parameter is
replicated, or split on 'fsdp' along its largest divisible axis (`parameter_sharding`). The
networks run under plain `jax.jit` and XLA inserts the reductions (batch-normalization statistics
included); per-sample work (rendering) runs under `jax.shard_map` on each device's own samples.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def create_mesh(mesh_config) -> jax.sharding.Mesh:
  """The ('data', 'fsdp') mesh; data = -1 takes every device not used by fsdp."""
  devices = jax.devices()
  fsdp = int(mesh_config.fsdp)
  data = int(mesh_config.data)
  if data == -1:
    if fsdp < 1 or len(devices) % fsdp:
      raise ValueError(f"mesh.fsdp={fsdp} does not divide the {len(devices)} devices")
    data = len(devices) // fsdp
  if data * fsdp > len(devices) or data < 1 or fsdp < 1:
    raise ValueError(f"mesh data={data} x fsdp={fsdp} needs {data * fsdp} devices; {len(devices)} are available")
  # Auto axes: XLA propagates the batch sharding through the networks and inserts the reductions.
  return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2,
                       devices=devices[:data * fsdp])


def batch_shards(mesh: jax.sharding.Mesh) -> int:
  """How many pieces a batch is split into."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def parameter_sharding(mesh: jax.sharding.Mesh, shape: tuple) -> NamedSharding:
  """Replicated, or split on 'fsdp' along the largest axis it divides (small arrays stay whole)."""
  fsdp = mesh.shape["fsdp"]
  if fsdp > 1 and math.prod(shape) >= 4096:
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
      if shape[axis] % fsdp == 0:
        spec = [None] * len(shape)
        spec[axis] = "fsdp"
        return NamedSharding(mesh, P(*spec))
  return NamedSharding(mesh, P())


def state_shardings(mesh: jax.sharding.Mesh, abstract_state):
  """`parameter_sharding` for every leaf of a pytree of arrays or shape structs."""
  return jax.tree.map(lambda leaf: parameter_sharding(mesh, leaf.shape), abstract_state)


def global_batch(mesh: jax.sharding.Mesh, local_batch: dict) -> dict:
  """This process's slice of a batch -> global arrays split over BATCH_AXES."""
  sharding = NamedSharding(mesh, P(BATCH_AXES))
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
