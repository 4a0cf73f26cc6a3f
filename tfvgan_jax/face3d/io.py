"""Morphable-model files: the native `.npz` format, and mesh export for viewers.

The native format is a NumPy `.npz` archive read with `allow_pickle=False`:

  format_version  0-d int, currently 1
  mean            [N, 3] float32
  id_basis        [N, 3, K_id] float32
  exp_basis       [N, 3, K_exp] float32
  triangles       [F, 3] int32, indices in [0, N)
  landmarks       [68] int32, indices in [0, N), iBUG-68 order
  albedo          optional [N, 3] float32 in [0, 1]
  name, licence   0-d unicode strings
"""

from __future__ import annotations

import hashlib
import os
from typing import Optional

import numpy as np

from tfvgan_jax import files
from tfvgan_jax.face3d.model import MorphableModel

FORMAT_VERSION = 1
NUM_LANDMARKS = 68
_FLOAT_KEYS = ("mean", "id_basis", "exp_basis", "albedo")
_INT_KEYS = ("triangles", "landmarks")


class ModelFileError(ValueError):
  """A morphable-model file that cannot be used; the message names the file and the key."""

  def __init__(self, path, key, problem):
    self.path, self.key = str(path), key
    where = f"{path}" if key is None else f"{path}: key {key!r}"
    super().__init__(f"{where}: {problem}")


def _check(path, key, condition, problem):
  if not condition:
    raise ModelFileError(path, key, problem)


def validate_arrays(arrays: dict, path="<arrays>") -> None:
  """Raises ModelFileError unless `arrays` hold a consistent morphable model."""
  for key in ("mean", "id_basis", "exp_basis", "triangles", "landmarks"):
    _check(path, key, key in arrays, "missing")
  for key in _FLOAT_KEYS:
    if key in arrays:
      _check(path, key, np.issubdtype(arrays[key].dtype, np.floating), f"must be floating point, got {arrays[key].dtype}")
      _check(path, key, np.all(np.isfinite(arrays[key])), "contains NaN or Inf")
  for key in _INT_KEYS:
    _check(path, key, np.issubdtype(arrays[key].dtype, np.integer), f"must be integer, got {arrays[key].dtype}")
  mean = arrays["mean"]
  _check(path, "mean", mean.ndim == 2 and mean.shape[1] == 3 and mean.shape[0] >= 3, f"must be [N, 3] with N >= 3, got {mean.shape}")
  n = mean.shape[0]
  for key in ("id_basis", "exp_basis"):
    basis = arrays[key]
    _check(path, key, basis.ndim == 3 and basis.shape[:2] == (n, 3), f"must be [N={n}, 3, K], got {basis.shape}")
  tri = arrays["triangles"]
  _check(path, "triangles", tri.ndim == 2 and tri.shape[1] == 3 and tri.shape[0] >= 1, f"must be [F, 3] with F >= 1, got {tri.shape}")
  _check(path, "triangles", tri.min() >= 0 and tri.max() < n, f"indices must lie in [0, {n}), found [{tri.min()}, {tri.max()}]")
  lmk = arrays["landmarks"]
  _check(path, "landmarks", lmk.shape == (NUM_LANDMARKS,), f"must be [{NUM_LANDMARKS}] (iBUG-68), got {lmk.shape}")
  _check(path, "landmarks", lmk.min() >= 0 and lmk.max() < n, f"indices must lie in [0, {n}), found [{lmk.min()}, {lmk.max()}]")
  if "albedo" in arrays:
    alb = arrays["albedo"]
    _check(path, "albedo", alb.shape == (n, 3), f"must be [N={n}, 3], got {alb.shape}")
    _check(path, "albedo", alb.min() >= 0 and alb.max() <= 1, "must lie in [0, 1]")


def model_arrays(model: MorphableModel) -> dict:
  """The model's arrays as NumPy, in the file's dtypes."""
  arrays = {
      "mean": np.asarray(model.mean, np.float32),
      "id_basis": np.asarray(model.id_basis, np.float32),
      "exp_basis": np.asarray(model.exp_basis, np.float32),
      "triangles": np.asarray(model.triangles, np.int32),
      "landmarks": np.asarray(model.landmarks, np.int32),
  }
  if model.albedo is not None:
    arrays["albedo"] = np.asarray(model.albedo, np.float32)
  return arrays


def content_hash(model: MorphableModel) -> str:
  """sha256 over the model's arrays and name: datasets record it to refuse a mismatched model."""
  digest = hashlib.sha256(model.name.encode())
  for key, value in sorted(model_arrays(model).items()):
    digest.update(key.encode())
    digest.update(str(value.shape).encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  return digest.hexdigest()


def save(model: MorphableModel, path) -> None:
  """Writes `model` as a native `.npz` (validated first, so a bad model never reaches disk)."""
  arrays = model_arrays(model)
  validate_arrays(arrays, path)
  # Atomically (a killed write leaves the earlier file), and to an open file so that NumPy adds no
  # ".npz" to a path without it.
  with files.atomic_path(path) as temporary, open(temporary, "wb") as f:
    np.savez(f, format_version=np.int32(FORMAT_VERSION), name=np.str_(model.name), licence=np.str_(model.licence),
             **arrays)


def load(path) -> MorphableModel:
  """Reads a native `.npz` model, validating shapes, dtypes and index ranges.

  Raises:
    ModelFileError: naming the file and the offending key.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ModelFileError(path, None, "no such file")
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {key: data[key] for key in data.files}
  except ValueError as e:
    raise ModelFileError(path, None, f"not a native model file (it holds pickled objects or is corrupt): {e}") from e
  except Exception as e:  # zipfile.BadZipFile, EOFError, OSError ...
    raise ModelFileError(path, None, f"not a readable .npz archive: {e}") from e
  _check(path, "format_version", "format_version" in arrays, "missing: not a tfvgan_jax model file")
  version = int(arrays.pop("format_version"))
  _check(path, "format_version", version == FORMAT_VERSION, f"version {version} is not supported (expected {FORMAT_VERSION})")
  name = str(arrays.pop("name", "unnamed"))
  licence = str(arrays.pop("licence", "unknown"))
  validate_arrays(arrays, path)
  return MorphableModel(
      mean=np.asarray(arrays["mean"], np.float32),
      id_basis=np.asarray(arrays["id_basis"], np.float32),
      exp_basis=np.asarray(arrays["exp_basis"], np.float32),
      triangles=np.asarray(arrays["triangles"], np.int32),
      landmarks=np.asarray(arrays["landmarks"], np.int32),
      albedo=np.asarray(arrays["albedo"], np.float32) if "albedo" in arrays else None,
      name=name,
      licence=licence,
  )


def export_mesh(path, vertices, model: MorphableModel, colors: Optional[np.ndarray] = None) -> None:
  """Writes a mesh (.obj or .ply, by extension) that any mesh viewer opens.

  Args:
    path: output file, `.obj` or `.ply`.
    vertices: [N, 3] model-space vertices (e.g. `vertices(model, a_id, a_exp)`).
    model: supplies the triangles (and the albedo when `colors` is None).
    colors: optional [N, 3] per-vertex colours, floats in [0, 1] or uint8.
  """
  import trimesh  # imported here: only mesh export needs it

  ext = os.path.splitext(os.fspath(path))[1].lower()
  if ext not in (".obj", ".ply"):
    raise ValueError(f"{path}: mesh export writes .obj or .ply, not {ext!r}")
  verts = np.asarray(vertices, np.float64)
  if verts.shape != (model.num_vertices, 3):
    raise ValueError(f"{path}: vertices must be [{model.num_vertices}, 3] for model {model.name!r}, got {verts.shape}")
  if colors is None and model.albedo is not None:
    colors = np.asarray(model.albedo)
  vertex_colors = None
  if colors is not None:
    colors = np.asarray(colors)
    if colors.shape != verts.shape:
      raise ValueError(f"{path}: colors must be [{model.num_vertices}, 3], got {colors.shape}")
    if np.issubdtype(colors.dtype, np.floating):
      colors = np.clip(np.round(colors * 255.0), 0, 255)
    vertex_colors = np.concatenate([colors.astype(np.uint8), np.full((len(colors), 1), 255, np.uint8)], axis=1)
  mesh = trimesh.Trimesh(vertices=verts, faces=np.asarray(model.triangles), vertex_colors=vertex_colors, process=False)
  mesh.export(os.fspath(path))
