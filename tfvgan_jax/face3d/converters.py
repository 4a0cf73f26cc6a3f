"""Converters from third-party morphable-model files to a `MorphableModel`.

A converter runs once, offline (`python -m data_prep.convert_face_model`), and its result is saved
in the native `.npz` format (`face3d.io`). Every converter returns a validated model in the
conventions of `face3d.model`:

  * model space: x to the viewer's right, y up, z toward a frontal viewer;
  * coefficients in units of the population standard deviation (prior N(0, I)): the source's
    coefficient mean is folded into `mean` and its scale into the bases;
  * triangles wound counter-clockwise seen from in front of the face, so that right-hand normals
    point out of the face;
  * landmarks: 68 vertex indices in iBUG-68 order.

Formats:
  3ddfa_v2  `convert_3ddfa_bfm`: the Basel Face Model as shipped by 3DDFA_V2.

Sources that ship as pickles are read by an unpickler that resolves only the names pickled NumPy
arrays use, so a file cannot call arbitrary functions; the reader still warns, because pickle was
never designed to be safe against crafted files.
"""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np

from tfvgan_jax.face3d.io import NUM_LANDMARKS, ModelFileError, _check, validate_arrays
from tfvgan_jax.face3d.model import MorphableModel

BFM_LICENCE = (
    "Basel Face Model 2009 (Paysan et al., AVSS 2009), in the no-neck version modified by 3DDFA_V2 "
    "(Guo et al., ECCV 2020). The model data is licensed by the University of Basel for academic, "
    "non-commercial research only: obtain it under the BFM licence (https://faces.dmi.unibas.ch/bfm/), "
    "do not redistribute it, and ask the University of Basel for a licence before any commercial use. "
    "3DDFA_V2's code (github.com/cleardusk/3DDFA_V2) is MIT-licensed; that licence does not cover the "
    "model data."
)

# The 3DDFA_V2 parameter vector: 12 camera numbers, then shape, then expression coefficients; its
# length names the split (utils/tddfa_util.py, _parse_param).
_3DDFA_CAMERA_SIZE = 12
_3DDFA_SPLITS = {62: (40, 10), 72: (40, 20), 141: (100, 29)}

# What pickled arrays name under NumPy 1 (numpy.core) and 2 (numpy._core); _codecs.encode carries
# the raw bytes of arrays pickled with protocol 2.
_NUMPY_GLOBALS = frozenset(
    [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
    + [(f"{core}.multiarray", name) for core in ("numpy.core", "numpy._core") for name in ("_reconstruct", "scalar")]
    + [(f"{core}.numeric", "_frombuffer") for core in ("numpy.core", "numpy._core")]
)


class _NumpyUnpickler(pickle.Unpickler):
  """Resolves only the globals that pickled NumPy arrays and scalars name (any NumPy version)."""

  def find_class(self, module, name):
    if (module, name) not in _NUMPY_GLOBALS:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are expected")
    return super().find_class(module, name)


def read_pickle(path):
  """Unpickles a file of NumPy arrays (a bare array, or a dict of them), warning first.

  Raises:
    ModelFileError: the file is missing, unreadable, or names anything but NumPy array types.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ModelFileError(path, None, "no such file")
  warnings.warn(f"{path}: unpickling can run code; convert only files from a trusted source")
  try:
    with open(path, "rb") as f:
      # latin1 is how NumPy arrays pickled by Python 2 must be read; Python 3 pickles ignore it.
      return _NumpyUnpickler(f, encoding="latin1").load()
  except Exception as e:  # UnpicklingError, EOFError, ValueError, OSError ...
    raise ModelFileError(path, None, f"not a readable pickle of NumPy arrays: {e}") from e


def describe_contents(label: str, path, contents) -> str:
  """One line for the file, then one per entry: key, dtype, shape (or the type of a non-array)."""
  entries = contents.items() if isinstance(contents, dict) else [("(array)", contents)]
  lines = [f"{label}: {os.fspath(path)}"]
  for key, value in entries:
    if isinstance(value, (np.ndarray, np.generic)):
      lines.append(f"  {key!s:<12} {value.dtype} {list(value.shape)}")
    else:
      lines.append(f"  {key!s:<12} {type(value).__name__}")
  return "\n".join(lines)


def describe_3ddfa_bfm(bfm_path, param_mean_std_path, tri_path=None) -> str:
  """What the 3DDFA_V2 files hold (keys, dtypes, shapes), for the converter to print."""
  sources = [("3DDFA_V2 BFM", bfm_path), ("parameter mean/std", param_mean_std_path)]
  if tri_path is not None:
    sources.append(("triangles", tri_path))
  return "\n".join(describe_contents(label, path, read_pickle(path)) for label, path in sources)


def convert_3ddfa_bfm(bfm_path, param_mean_std_path, tri_path=None) -> MorphableModel:
  """The Basel Face Model as 3DDFA_V2 ships it, with 3DDFA_V2's parameter statistics folded in.

  3DDFA_V2 (bfm/bfm.py, TDDFA.py) de-normalizes its network output as p = p_net * std + mean, splits
  p into a 3x4 camera [s R | t] (12 numbers, row-major), p_shp and p_exp, and reconstructs
    (u + w_shp @ p_shp + w_exp @ p_exp).reshape(3, -1, order="F")  ->  [3, N] vertices,
  so the flattened arrays interleave x, y, z vertex by vertex. The files read:
    bfm (configs/bfm_noneck_v3.pkl), a dict:
      u          [3N, 1] mean shape.
      w_shp      [3N, >= K_id] shape basis; the first K_id columns are used, as 3DDFA_V2 does.
      w_exp      [3N, >= K_exp] expression basis; the first K_exp columns.
      keypoints  [3 * 68] indices into the flattened 3N arrays: x, y, z of each iBUG-68 landmark.
      tri        optional [3, F] triangles; 3DDFA_V2 replaces those of bfm_noneck_v3.pkl by tri.pkl's.
    param_mean_std (configs/param_mean_std_62d_120x120.pkl), a dict: 'mean', 'std' [P] with
      P = 12 + K_id + K_exp: 62 (40 + 10), 72 (40 + 20) or 141 (100 + 29).
    tri (configs/tri.pkl), a bare [3, F] array of 0-based vertex indices (1-based is detected:
      indices that reach N and never 0).

  The converted coefficients are a_id = (p_shp - mean_shp) / std_shp and a_exp likewise, so
    mean = u + w_shp @ mean_shp + w_exp @ mean_exp,  id_basis = w_shp * std_shp,  exp_basis likewise,
  and N(0, I) is the spread of the parameters 3DDFA_V2 was trained on.

  Axes, units, origin: 3DDFA_V2's camera rotation is the identity for a frontal face and its image
  y is `size - y` (utils/tddfa_util.py, similar_transform; utils/pose.py), so its model space is
  already ours (x to the viewer's right, y up, z toward the viewer) and no axis changes. Units and
  origin are kept as in the file (the BFM's), so 3DDFA_V2's camera [s R | t] applies to the
  converted vertices exactly as to its own. Triangles are re-wound counter-clockwise from the front
  if the file's run the other way.

  Args:
    bfm_path: the BFM pickle.
    param_mean_std_path: the parameter mean/std pickle.
    tri_path: the triangle pickle; None reads 'tri' from the BFM pickle instead.

  Returns:
    A validated model named 'bfm-3ddfa-v2' under the BFM's licence (`BFM_LICENCE`).

  Raises:
    ModelFileError: a file is missing or unreadable, or a key is missing or malformed; the message
      names the file and the key.
  """
  bfm_path, param_mean_std_path = os.fspath(bfm_path), os.fspath(param_mean_std_path)
  bfm = _dict_of(bfm_path, read_pickle(bfm_path))
  stats = _dict_of(param_mean_std_path, read_pickle(param_mean_std_path))

  param_mean = _vector(param_mean_std_path, stats, "mean")
  param_std = _vector(param_mean_std_path, stats, "std")
  _check(param_mean_std_path, "mean", param_mean.size in _3DDFA_SPLITS,
         f"has {param_mean.size} entries; 3DDFA_V2 parameters have {sorted(_3DDFA_SPLITS)}")
  _check(param_mean_std_path, "std", param_std.shape == param_mean.shape,
         f"has shape {list(param_std.shape)}, 'mean' has {list(param_mean.shape)}")
  _check(param_mean_std_path, "std", np.all(param_std[_3DDFA_CAMERA_SIZE:] > 0), "coefficient stds must be positive")
  k_id, k_exp = _3DDFA_SPLITS[param_mean.size]
  mean_shp, mean_exp = np.split(param_mean[_3DDFA_CAMERA_SIZE:], [k_id])
  std_shp, std_exp = np.split(param_std[_3DDFA_CAMERA_SIZE:], [k_id])

  u = _vector(bfm_path, bfm, "u")
  _check(bfm_path, "u", u.size % 3 == 0 and u.size >= 9, f"must hold x, y, z of N >= 3 vertices, got {u.size} numbers")
  n = u.size // 3
  w_shp = _basis(bfm_path, bfm, "w_shp", 3 * n, k_id)
  w_exp = _basis(bfm_path, bfm, "w_exp", 3 * n, k_exp)
  landmarks = _landmarks_3ddfa(bfm_path, bfm, n)
  if tri_path is None:
    _check(bfm_path, "tri", "tri" in bfm, "missing: give the triangle file (3DDFA_V2's configs/tri.pkl)")
    triangles = _triangles_3ddfa(bfm_path, "tri", bfm["tri"], n)
  else:
    tri_path = os.fspath(tri_path)
    triangles = _triangles_3ddfa(tri_path, None, read_pickle(tri_path), n)

  mean = (u + w_shp @ mean_shp + w_exp @ mean_exp).reshape(n, 3)
  arrays = {
      "mean": mean.astype(np.float32),
      "id_basis": (w_shp * std_shp).reshape(n, 3, k_id).astype(np.float32),
      "exp_basis": (w_exp * std_exp).reshape(n, 3, k_exp).astype(np.float32),
      "triangles": _wound_counter_clockwise(triangles, mean).astype(np.int32),
      "landmarks": landmarks.astype(np.int32),
  }
  validate_arrays(arrays, bfm_path)
  return MorphableModel(**arrays, name="bfm-3ddfa-v2", licence=BFM_LICENCE)


def _dict_of(path, contents) -> dict:
  _check(path, None, isinstance(contents, dict), f"expected a pickled dict of arrays, got {type(contents).__name__}")
  return contents


def _array(path, key, value) -> np.ndarray:
  """`value` as a real-valued array; ModelFileError when absent or not numeric."""
  _check(path, key, value is not None, "missing")
  _check(path, key, isinstance(value, (np.ndarray, np.generic)), f"must be an array, got {type(value).__name__}")
  _check(path, key, np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating),
         f"must be numeric, got {value.dtype}")
  _check(path, key, np.all(np.isfinite(value)), "contains NaN or Inf")
  return np.asarray(value)


def _vector(path, contents, key) -> np.ndarray:
  """contents[key] as a float64 vector; a [M, 1] or [1, M] column is accepted as [M]."""
  value = _array(path, key, contents.get(key))
  _check(path, key, value.ndim >= 1 and np.squeeze(value).ndim == 1, f"must be a vector, got shape {list(value.shape)}")
  return value.reshape(-1).astype(np.float64)


def _basis(path, contents, key, rows, columns) -> np.ndarray:
  """The first `columns` columns of the [rows, >= columns] matrix contents[key], as float64."""
  value = _array(path, key, contents.get(key))
  _check(path, key, value.ndim == 2 and value.shape[0] == rows and value.shape[1] >= columns,
         f"must be [3N={rows}, >= {columns}] (3N from 'u', the column count from the parameter file), "
         f"got {list(value.shape)}")
  return value[:, :columns].astype(np.float64)


def _indices(path, key, value) -> np.ndarray:
  """An array of indices as int64; integral floats are accepted, as some pickles store them."""
  value = _array(path, key, value)
  _check(path, key, np.all(np.round(value) == value), "must hold integer indices")
  return value.astype(np.int64)


def _landmarks_3ddfa(path, contents, n) -> np.ndarray:
  """[68] vertex indices from 3DDFA_V2's keypoints, which index x, y, z of each landmark in the
  flattened [3N] arrays."""
  keypoints = _indices(path, "keypoints", contents.get("keypoints"))
  _check(path, "keypoints", keypoints.size == 3 * NUM_LANDMARKS,
         f"must hold {3 * NUM_LANDMARKS} indices (x, y, z of 68 landmarks), got shape {list(keypoints.shape)}")
  keypoints = keypoints.reshape(NUM_LANDMARKS, 3)
  vertex = keypoints[:, 0] // 3
  _check(path, "keypoints", np.array_equal(keypoints, 3 * vertex[:, None] + np.arange(3)),
         "each landmark's three indices must be 3v, 3v + 1, 3v + 2 (x, y, z of one vertex v)")
  _check(path, "keypoints", vertex.min() >= 0 and vertex.max() < n,
         f"indices must lie in [0, 3N={3 * n}), found [{keypoints.min()}, {keypoints.max()}]")
  return vertex


def _triangles_3ddfa(path, key, value, n) -> np.ndarray:
  """[F, 3] 0-based triangles from 3DDFA's [3, F] layout, 0- or 1-based."""
  triangles = _indices(path, key, value)
  _check(path, key, triangles.ndim == 2 and triangles.shape[0] == 3 and triangles.shape[1] >= 1,
         f"must be [3, F] as 3DDFA_V2 stores triangles, got {list(triangles.shape)}")
  triangles = triangles.T
  # A mesh uses all its vertices, so 0-based indices reach 0 and 1-based ones (MATLAB's, as in
  # 3DDFA's older tri.mat) reach N.
  if triangles.min() >= 1 and triangles.max() == n:
    triangles = triangles - 1
  _check(path, key, triangles.min() >= 0 and triangles.max() < n,
         f"indices must lie in [0, N={n}), found [{triangles.min()}, {triangles.max()}]")
  return triangles


def _wound_counter_clockwise(triangles, vertices) -> np.ndarray:
  """`triangles` [F, 3], re-wound if the mesh runs clockwise seen from +z (from in front).

  The z components of the edge cross products sum to twice the mesh's signed area projected on the
  image plane, positive when the mesh, mostly facing the viewer, is wound counter-clockwise.
  """
  a, b, c = (vertices[triangles[:, i]] for i in range(3))
  signed_area = np.cross(b - a, c - a)[:, 2].sum()
  return triangles if signed_area >= 0 else triangles[:, [0, 2, 1]]
