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
  3ddfa_v2     `convert_3ddfa_bfm`: the Basel Face Model as shipped by 3DDFA_V2.
  deep3d_bfm   `convert_deep3d_bfm`: BFM_model_front.mat, the cropped Basel Face Model with Guo et
               al.'s expression basis that Deep3DFaceRecon builds (util/load_mats.py).
  sfm          `convert_sfm`: the Surrey Face Model as eos ships it (sfm_shape_3448.bin,
               expression_blendshapes_3448.bin, ibug_to_sfm.txt), read with eos-py.

Sources that ship as pickles are read by an unpickler that resolves only the names pickled NumPy
arrays use, so a file cannot call arbitrary functions; the reader still warns, because pickle was
never designed to be safe against crafted files.
"""

from __future__ import annotations

import os
import pickle
import tomllib
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


DEEP3D_LICENCE = (
    "Basel Face Model 2009 (Paysan et al., AVSS 2009) mean and identity basis, cropped to the front of "
    "the face by Deep3DFaceRecon (Deng et al., CVPR-W 2019); expression basis of Guo et al. (TPAMI 2018), "
    "built from FaceWarehouse (Cao et al., TVCG 2014). The BFM data is licensed by the University of "
    "Basel for academic, non-commercial research only (https://faces.dmi.unibas.ch/bfm/); the expression "
    "basis derives from FaceWarehouse, which is likewise for non-commercial research only. Do not "
    "redistribute the model, and ask the owners of both before any commercial use. Deep3DFaceRecon's "
    "code licence does not cover the model data."
)
SFM_LICENCE = (
    "Surrey Face Model (Huber et al., VISAPP 2016): the shape-only 3448-vertex model and its expression "
    "blendshapes as distributed with eos (github.com/patrikhuber/eos). The model data is made available "
    "by the University of Surrey for non-commercial purposes only, under the Surrey Face Model licence "
    "(https://cvssp.org/facemodel); read it before use, do not redistribute the model, and ask the "
    "University of Surrey before any commercial use. eos's code licence (Apache-2.0) does not cover the "
    "model data."
)
# The standard deviation assumed for every SFM expression blendshape weight (see `convert_sfm`).
SFM_BLENDSHAPE_STD = 0.5
# Fewer shared landmarks than this leave the template placement of the missing ones (see
# `complete_landmarks`) too loosely determined.
MIN_MAPPED_LANDMARKS = 8


def fit_similarity(source, target):
  """The similarity that best maps `source` onto `target` in least squares (Umeyama, 1991).

  Minimises sum_i |scale * rotation @ source_i + translation - target_i|^2 over scale > 0, proper
  rotations (det = +1) and translations. With X, Y the centred point sets and U D V^T the SVD of
  Y^T X, rotation = U S V^T with S = diag(1, ..., 1, det(U V^T)), scale = tr(D S) / |X|^2.

  Args:
    source, target: [..., P, 3] corresponding points; leading dims are a batch.

  Returns:
    scale [...], rotation [..., 3, 3], translation [..., 3].
  """
  source = np.asarray(source, np.float64)
  target = np.asarray(target, np.float64)
  source_centre = source.mean(axis=-2)
  target_centre = target.mean(axis=-2)
  x = source - source_centre[..., None, :]
  y = target - target_centre[..., None, :]
  u, d, vt = np.linalg.svd(np.swapaxes(y, -1, -2) @ x)
  sign = np.ones_like(d)
  sign[..., -1] = np.sign(np.linalg.det(u @ vt))
  rotation = (u * sign[..., None, :]) @ vt
  scale = (d * sign).sum(axis=-1) / np.square(x).sum(axis=(-1, -2))
  translation = target_centre - scale[..., None] * np.einsum("...ij,...j->...i", rotation, source_centre)
  return scale, rotation, translation


def _read_mat(path) -> dict:
  """The variables of a MATLAB .mat file (v4 to v7), without scipy's '__header__'-style entries."""
  from scipy import io as scipy_io  # imported here: only the .mat converters need it

  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ModelFileError(path, None, "no such file")
  try:
    contents = scipy_io.loadmat(path)
  except NotImplementedError as e:  # what loadmat raises for v7.3 files
    raise ModelFileError(path, None, "a MATLAB v7.3 (HDF5) file, which scipy cannot read: save it again "
                         "with save(..., '-v7')") from e
  except Exception as e:  # ValueError, TypeError, OSError ... on files that are not .mat
    raise ModelFileError(path, None, f"not a readable MATLAB .mat file: {e}") from e
  return {key: value for key, value in contents.items() if not key.startswith("__")}


def describe_deep3d_bfm(mat_path) -> str:
  """What Deep3DFaceRecon's BFM_model_front.mat holds (keys, dtypes, shapes), for the converter to print."""
  return describe_contents("Deep3DFaceRecon BFM", mat_path, _read_mat(mat_path))


def convert_deep3d_bfm(mat_path, recenter: bool = True) -> MorphableModel:
  """Deep3DFaceRecon's BFM_model_front.mat: the front of the BFM 2009 with Guo et al.'s expressions.

  Deep3DFaceRecon (util/load_mats.py, transferBFM09) writes the file with scipy.io.savemat from the
  BFM 2009 (01_MorphableModel.mat) and Guo et al.'s Exp_Pca.bin / std_exp.txt, keeping 35709 vertices
  of the front of the face; its models/bfm.py (ParametricFaceModel) reads it back as
    shape = (meanshape + idBase @ alpha_id + exBase @ alpha_exp).reshape(-1, 3)   -> [N, 3],
  so the [1, 3N] / [3N, K] arrays interleave x, y, z vertex by vertex. The keys read:
    meanshape  [1, 3N] mean shape.
    idBase     [3N, K_id] (80 columns) identity basis, BFM's shapePC * shapeEV.
    exBase     [3N, K_exp] (64 columns) expression basis, Guo et al.'s expPC * std_exp.
    tri        [F, 3] triangles, 1-based vertex indices (MATLAB's).
    keypoints  [1, 68] 1-based vertex indices of the iBUG-68 landmarks.
    meantex    optional [1, 3N] mean albedo, RGB in 0-255 (BFM's texMU).
  The other keys (texBase, point_buf, tri_mask2, frontmask2_idx, skinmask) are listed by
  `describe_deep3d_bfm` and not used.

  Coefficient scale: BFM 2009's shapeEV holds standard deviations (its own sampler draws
  shape = shapeMU + shapePC (alpha .* shapeEV) with alpha ~ N(0, I)), and std_exp.txt holds those of
  Guo et al.'s expression axes; transferBFM09 multiplies both into the bases. The coefficients are
  therefore already in units of the population std and the bases are taken as they are. The file
  itself does not record this: a file built otherwise would need its stds folded in by hand.

  Axes, units, origin: the model space is the BFM's, which is ours (x to the viewer's right, y up,
  z toward the viewer; Deep3DFaceRecon places its camera at z = +10 looking down -z), so no axis
  changes. Units are the file's: transferBFM09 divides the BFM's micrometres by 1e5, so one unit is a
  decimetre (the outer eye corners are about 0.9 apart, close to the 1.2 of the procedural model).
  With `recenter` the mean's centroid is moved to the origin, as ParametricFaceModel does by
  default, so Deep3DFaceRecon's translation coefficients apply unchanged. Triangles are re-wound
  counter-clockwise from the front if the file's run the other way. meantex / 255 becomes the
  albedo when it lies in 0-255; otherwise the model has none and a warning says so.

  Args:
    mat_path: BFM_model_front.mat.
    recenter: move the mean shape's centroid to the origin (Deep3DFaceRecon's default).

  Returns:
    A validated model named 'bfm09_deep3d' under `DEEP3D_LICENCE`.

  Raises:
    ModelFileError: the file is missing or unreadable, or a key is missing or malformed; the message
      names the file and the key.
  """
  mat_path = os.fspath(mat_path)
  mat = _read_mat(mat_path)
  meanshape = _vector(mat_path, mat, "meanshape")
  _check(mat_path, "meanshape", meanshape.size % 3 == 0 and meanshape.size >= 9,
         f"must hold x, y, z of N >= 3 vertices, got {meanshape.size} numbers")
  n = meanshape.size // 3
  id_basis = _all_columns(mat_path, mat, "idBase", 3 * n, "meanshape")
  exp_basis = _all_columns(mat_path, mat, "exBase", 3 * n, "meanshape")
  triangles = _indices(mat_path, "tri", mat.get("tri"))
  _check(mat_path, "tri", triangles.ndim == 2 and triangles.shape[1] == 3 and triangles.shape[0] >= 1,
         f"must be [F, 3] as Deep3DFaceRecon stores triangles, got {list(triangles.shape)}")
  keypoints = _indices(mat_path, "keypoints", mat.get("keypoints")).reshape(-1)
  _check(mat_path, "keypoints", keypoints.size == NUM_LANDMARKS,
         f"must hold {NUM_LANDMARKS} vertex indices, got {keypoints.size}")

  mean = meanshape.reshape(n, 3)
  if recenter:
    mean = mean - mean.mean(axis=0)
  arrays = {
      "mean": mean.astype(np.float32),
      "id_basis": id_basis.reshape(n, 3, -1).astype(np.float32),
      "exp_basis": exp_basis.reshape(n, 3, -1).astype(np.float32),
      "triangles": _wound_counter_clockwise(_from_one_based(mat_path, "tri", triangles, n), mean).astype(np.int32),
      "landmarks": _from_one_based(mat_path, "keypoints", keypoints, n).astype(np.int32),
  }
  albedo = _albedo_from_meantex(mat_path, mat, n)
  if albedo is not None:
    arrays["albedo"] = albedo
  validate_arrays(arrays, mat_path)
  return MorphableModel(**arrays, name="bfm09_deep3d", licence=DEEP3D_LICENCE)


def _all_columns(path, contents, key, rows, rows_from) -> np.ndarray:
  """The [rows, K >= 1] matrix contents[key], as float64."""
  value = _array(path, key, contents.get(key))
  _check(path, key, value.ndim == 2 and value.shape[0] == rows and value.shape[1] >= 1,
         f"must be [3N={rows}, K] (3N from {rows_from!r}), got {list(value.shape)}")
  return value.astype(np.float64)


def _from_one_based(path, key, indices, n) -> np.ndarray:
  """0-based copies of MATLAB's 1-based vertex indices, which must lie in [1, N]."""
  _check(path, key, indices.min() >= 1 and indices.max() <= n,
         f"must be 1-based vertex indices in [1, N={n}], found [{indices.min()}, {indices.max()}]")
  return indices - 1


def _albedo_from_meantex(path, mat, n):
  """[N, 3] albedo in [0, 1] from the 0-255 'meantex', or None when absent or out of range."""
  if "meantex" not in mat:
    return None
  meantex = _vector(path, mat, "meantex")
  _check(path, "meantex", meantex.size == 3 * n, f"must hold RGB of N={n} vertices, got {meantex.size} numbers")
  if meantex.min() < 0 or meantex.max() > 255:
    warnings.warn(f"{path}: 'meantex' spans [{meantex.min():g}, {meantex.max():g}], not 0-255; "
                  "the model is converted without albedo")
    return None
  return (meantex / 255.0).reshape(n, 3).astype(np.float32)


def _eos_morphablemodel(path):
  """eos-py's morphablemodel module; ModelFileError naming the install command when it is absent."""
  try:
    import eos  # imported here: only the SFM converter needs it
  except ImportError as e:
    raise ModelFileError(path, None, "reading eos model files needs eos-py: pip install eos-py") from e
  return eos.morphablemodel


def _read_eos(path, loader: str, what: str):
  """Reads an eos cereal binary with eos-py's `loader` ('load_model' or 'load_blendshapes')."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ModelFileError(path, None, "no such file")
  morphablemodel = _eos_morphablemodel(path)
  try:
    return getattr(morphablemodel, loader)(path)
  except Exception as e:  # RuntimeError, or MemoryError when a length read from another kind of file is huge
    raise ModelFileError(path, None, f"not a readable eos {what} (cereal binary archive): {e}") from e


def read_landmark_mapping(path) -> dict:
  """iBUG-68 number (1 to 68) -> vertex id, from an eos landmark mapping such as ibug_to_sfm.txt.

  The file is TOML; its [landmark_mappings] table lists `<iBUG number> = <vertex id>` lines. Other
  tables (eos's [contour_landmarks]) are ignored.

  Raises:
    ModelFileError: naming the file and the problem.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ModelFileError(path, None, "no such file")
  try:
    with open(path, "rb") as f:
      contents = tomllib.load(f)
  except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
    raise ModelFileError(path, None, f"not a readable TOML landmark mapping: {e}") from e
  key = "landmark_mappings"
  table = contents.get(key)
  _check(path, key, isinstance(table, dict), "missing: expected a [landmark_mappings] table of "
         "`<iBUG number> = <vertex id>` lines")
  mapping = {}
  for number, vertex in table.items():
    _check(path, key, number.isdigit() and 1 <= int(number) <= NUM_LANDMARKS,
           f"{number!r} is not an iBUG-68 landmark number (1 to {NUM_LANDMARKS})")
    _check(path, key, isinstance(vertex, int) and not isinstance(vertex, bool) and vertex >= 0,
           f"landmark {number}: the vertex id must be a non-negative integer, got {vertex!r}")
    mapping[int(number)] = vertex
  return mapping


def _template_landmarks() -> np.ndarray:
  """[68, 3] the iBUG-68 landmarks of the procedural model's mean face (model space)."""
  from tfvgan_jax.face3d.procedural import procedural_model  # imported here: only SFM landmarks need it

  model = procedural_model(detail="low")
  return np.asarray(model.mean, np.float64)[np.asarray(model.landmarks)]


def complete_landmarks(mapping: dict, mean, path="<mapping>"):
  """[68] vertex ids: the mapped ones, and for each unmapped landmark the vertex nearest its template.

  The template is the procedural model's 68 landmarks (a generic face, `face3d.procedural`), moved
  onto the mesh by the similarity (`fit_similarity`) that best maps its mapped landmarks onto their
  vertices. An unmapped landmark becomes the mesh vertex nearest to where the moved template puts it.
  This fills eos's ibug_to_sfm.txt, which maps no jaw-line point but the chin (iBUG 1-8, 10-17:
  eos searches a contour for them at fitting time) and neither inner mouth corner (61, 65). The
  jaw line of a 2D detector follows the silhouette, which moves over the face with the pose; fixed
  vertices are what 3DDFA's and Deep3DFaceRecon's keypoints use too, and are right for a frontal
  face.

  Args:
    mapping: iBUG number (1-based) -> vertex id, at least `MIN_MAPPED_LANDMARKS` entries.
    mean: [N, 3] the mesh's mean shape, model space.
    path: the mapping's file, for error messages.

  Returns:
    ([68] int vertex ids in iBUG order, sorted list of the 1-based iBUG numbers that were placed).
  """
  mean = np.asarray(mean, np.float64)
  bad = {number: vertex for number, vertex in mapping.items() if vertex >= len(mean)}
  _check(path, "landmark_mappings", not bad, f"vertex ids must lie in [0, N={len(mean)}), got {bad}")
  _check(path, "landmark_mappings", len(mapping) >= MIN_MAPPED_LANDMARKS,
         f"maps {len(mapping)} landmarks; at least {MIN_MAPPED_LANDMARKS} are needed to place the others")
  numbers = sorted(mapping)
  template = _template_landmarks()
  scale, rotation, translation = fit_similarity(template[np.array(numbers) - 1], mean[[mapping[k] for k in numbers]])
  placed = scale * template @ rotation.T + translation
  nearest = np.argmin(np.square(placed[:, None, :] - mean[None, :, :]).sum(-1), axis=1)
  landmarks = np.array([mapping.get(k + 1, nearest[k]) for k in range(NUM_LANDMARKS)], np.int64)
  return landmarks, [k for k in range(1, NUM_LANDMARKS + 1) if k not in mapping]


def describe_sfm(model_path, blendshapes_path, landmarks_path) -> str:
  """What the eos files hold (sizes, blendshape names, mapped landmarks), for the converter to print."""
  model = _read_eos(model_path, "load_model", "MorphableModel")
  shape = model.get_shape_model()
  blendshapes = _read_eos(blendshapes_path, "load_blendshapes", "blendshape list")
  mapping = read_landmark_mapping(landmarks_path)
  missing = [k for k in range(1, NUM_LANDMARKS + 1) if k not in mapping]
  return "\n".join([
      f"eos MorphableModel: {os.fspath(model_path)}",
      f"  shape PCA    {shape.get_data_dimension() // 3} vertices, {shape.get_num_principal_components()} "
      f"components, {len(shape.get_triangle_list())} triangles",
      f"  colour PCA   {model.get_color_model().get_data_dimension() // 3 if model.has_color_model() else 0} vertices",
      f"eos blendshapes: {os.fspath(blendshapes_path)}",
      f"  {len(blendshapes)} blendshapes: {', '.join(b.name for b in blendshapes)}",
      f"landmark mapping: {os.fspath(landmarks_path)}",
      f"  {len(mapping)} of {NUM_LANDMARKS} iBUG landmarks mapped; placed from a template: {missing or 'none'}",
  ])


def convert_sfm(model_path, blendshapes_path, landmarks_path,
                blendshape_std: float = SFM_BLENDSHAPE_STD) -> MorphableModel:
  """The Surrey Face Model as eos ships it, read with eos-py (`pip install eos-py`).

  Files read (eos's share/ folder):
    sfm_shape_3448.bin  an eos MorphableModel (cereal binary): a shape PCA model (mean [3N], an
      orthonormal basis [3N, K], eigenvalues [K], i.e. variances, and the triangle list), an
      optional colour PCA model, and no expression model of its own.
    expression_blendshapes_3448.bin  a list of eos Blendshapes: a name and a deformation [3N], the
      offset from the mean of one full expression (the SFM's six: anger, disgust, fear, happiness,
      sadness, surprise).
    ibug_to_sfm.txt  TOML: iBUG number -> vertex id (`read_landmark_mapping`).
  All flat arrays interleave x, y, z vertex by vertex (eos's get_mean_at_point reads 3i .. 3i + 2).

  Identity: id_basis = basis * sqrt(eigenvalues), so a_id ~ N(0, I) is the shape PCA's own prior.

  Expression: blendshapes are not principal axes: eos fits non-negative weights, 1 meaning the full
  expression, and the axes are neither orthogonal nor of equal spread. Each blendshape is kept as
  one axis, so the coefficients keep their names, scaled by `blendshape_std`: a coefficient of 1
  is `blendshape_std` of the full expression, and the N(0, I) prior puts the full expression at
  1 / blendshape_std standard deviations (2 at the default 0.5, so most prior mass lies within
  the full expression either way). Orthonormalising the six instead would give axes that mix
  expressions and still no measured spread: no data on how often each expression occurs ships with
  the model, so the std is an assumption, written here and in the CLI's output. Negative
  coefficients give the opposite deformation, which eos's non-negative fitting never produces.

  Landmarks: the mapping covers only some of the 68 (eos's omits the jaw line but the chin, and the
  inner mouth corners); `complete_landmarks` places the others at the vertices nearest a template
  face moved onto the mapped ones, and `describe_sfm` lists which.

  Axes, units, albedo: eos uses OpenGL's model space, which is ours (x to the viewer's right, y up,
  z toward the viewer), so no axis changes. Units and origin are the file's (the SFM's, about
  millimetres). Triangles are re-wound counter-clockwise from the front if they run the other way.
  The colour model's mean becomes the albedo when the model has one in [0, 1].

  Args:
    model_path, blendshapes_path, landmarks_path: the three files.
    blendshape_std: the std assumed for each blendshape weight (> 0).

  Returns:
    A validated model named 'sfm_3448' (or 'sfm_<N>') under `SFM_LICENCE`.

  Raises:
    ModelFileError: a file is missing, unreadable or malformed, or eos-py is not installed.
    ValueError: blendshape_std is not positive.
  """
  if not blendshape_std > 0:
    raise ValueError(f"blendshape_std must be positive, got {blendshape_std}")
  model_path, blendshapes_path = os.fspath(model_path), os.fspath(blendshapes_path)
  model = _read_eos(model_path, "load_model", "MorphableModel")
  _check(model_path, None, not model.has_separate_expression_model(),
         "has an expression model of its own; this converter reads a shape-only model (sfm_shape_*.bin) "
         "with a separate blendshape file")
  shape = model.get_shape_model()
  mean = np.asarray(shape.get_mean(), np.float64)
  _check(model_path, "shape mean", mean.size % 3 == 0 and mean.size >= 9,
         f"must hold x, y, z of N >= 3 vertices, got {mean.size} numbers")
  n = mean.size // 3
  basis = np.asarray(shape.get_orthonormal_pca_basis(), np.float64)
  eigenvalues = np.asarray(shape.get_eigenvalues(), np.float64).reshape(-1)
  _check(model_path, "shape basis", basis.ndim == 2 and basis.shape[0] == 3 * n and basis.shape[1] >= 1,
         f"must be [3N={3 * n}, K >= 1], got {list(basis.shape)}")
  _check(model_path, "shape eigenvalues", eigenvalues.shape == (basis.shape[1],) and np.all(eigenvalues >= 0),
         f"must be {basis.shape[1]} non-negative variances, got shape {list(eigenvalues.shape)}")
  triangles = np.asarray(shape.get_triangle_list(), np.int64).reshape(-1, 3)
  blendshapes = _read_eos(blendshapes_path, "load_blendshapes", "blendshape list")
  _check(blendshapes_path, None, len(blendshapes) >= 1, "holds no blendshapes")
  for blendshape in blendshapes:
    _check(blendshapes_path, blendshape.name, np.asarray(blendshape.deformation).size == 3 * n,
           f"deformation has {np.asarray(blendshape.deformation).size} numbers, the model 3N={3 * n}")
  deformations = np.stack([np.asarray(b.deformation, np.float64) for b in blendshapes], axis=-1)

  mean = mean.reshape(n, 3)
  landmarks, _ = complete_landmarks(read_landmark_mapping(landmarks_path), mean, os.fspath(landmarks_path))
  arrays = {
      "mean": mean.astype(np.float32),
      "id_basis": (basis * np.sqrt(eigenvalues)).reshape(n, 3, -1).astype(np.float32),
      "exp_basis": (blendshape_std * deformations).reshape(n, 3, -1).astype(np.float32),
      "triangles": _wound_counter_clockwise(triangles, mean).astype(np.int32),
      "landmarks": landmarks.astype(np.int32),
  }
  if model.has_color_model():
    colour = np.asarray(model.get_color_model().get_mean(), np.float64)
    if colour.size == 3 * n and colour.min() >= 0 and colour.max() <= 1:
      arrays["albedo"] = colour.reshape(n, 3).astype(np.float32)
    else:
      warnings.warn(f"{model_path}: the colour model's mean is not RGB in [0, 1] for N={n} vertices; "
                    "the model is converted without albedo")
  validate_arrays(arrays, model_path)
  return MorphableModel(**arrays, name=f"sfm_{n}", licence=SFM_LICENCE)
