"""Tests of face3d.converters and the data_prep.convert_face_model CLI on small 3DDFA_V2-like files.

The files mimic 3DDFA_V2's configs/: bfm_noneck_v3.pkl (a dict with 'u' [3N, 1], 'w_shp', 'w_exp'
[3N, K], 'keypoints' [204]), tri.pkl (a bare [3, F] array) and param_mean_std_62d_120x120.pkl (a
dict with 'mean', 'std' [62]), on an 8 x 10 vertex grid bulging toward the viewer.
"""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from scipy import io as scipy_io

from data_prep import convert_face_model
from tfvgan_jax import face3d
from tfvgan_jax.face3d import converters

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS, COLS = 8, 10
N = ROWS * COLS
# More columns than the 62-d parameter uses: 3DDFA_V2 keeps the first 40 shape columns.
SHAPE_COLUMNS, EXP_COLUMNS = 50, 10

pytestmark = pytest.mark.filterwarnings("ignore:.*unpickling can run code")


def _grid():
  """[N, 3] grid vertices (row r at height y, column c at x) and its triangles, [F, 3] wound
  counter-clockwise seen from +z."""
  y, x = np.meshgrid(np.linspace(-1.0, 1.0, ROWS), np.linspace(-0.8, 0.8, COLS), indexing="ij")
  vertices = np.stack([x, y, 0.3 * (1.0 - x**2 - y**2)], axis=-1).reshape(N, 3)
  index = np.arange(N).reshape(ROWS, COLS)
  a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
  triangles = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
  return vertices, triangles


def _dump(path, obj):
  with open(path, "wb") as f:
    pickle.dump(obj, f)
  return str(path)


@pytest.fixture
def source(tmp_path):
  """Writes the three files; the triangles go out clockwise from the front, as tri.pkl's do."""
  rng = np.random.default_rng(0)
  vertices, triangles = _grid()
  landmarks = rng.choice(N, size=68, replace=False)
  arrays = {
      # BFM-like magnitudes (tens of thousands) so that float32 rounding is exercised; offsets
      # small enough that the mean shape stays an untangled surface facing +z.
      "u": (5e4 * vertices).reshape(-1, 1).astype(np.float32),
      "w_shp": (0.05 * rng.normal(size=(3 * N, SHAPE_COLUMNS))).astype(np.float32),
      "w_exp": (50.0 * rng.normal(size=(3 * N, EXP_COLUMNS))).astype(np.float32),
      "keypoints": (3 * landmarks[:, None] + np.arange(3)).reshape(-1),
  }
  stats = {
      "mean": rng.normal(size=62).astype(np.float32),
      "std": rng.uniform(0.5, 2.0, size=62).astype(np.float32),
  }
  stats["mean"][12:52] *= 1e3
  stats["std"][12:52] *= 1e3
  tri = triangles[:, [0, 2, 1]].T.copy()
  return {
      "arrays": arrays, "stats": stats, "triangles": triangles, "landmarks": landmarks, "tri": tri,
      "bfm": _dump(tmp_path / "bfm_noneck_v3.pkl", arrays),
      "params": _dump(tmp_path / "param_mean_std_62d_120x120.pkl", stats),
      "tri_path": _dump(tmp_path / "tri.pkl", tri),
  }


def _tddfa_vertices(arrays, param, index=slice(None)):
  """3DDFA_V2's reconstruction (TDDFA.recon_vers without the camera): [3, M] points.

  `index` selects rows of the flattened arrays, as its sparse path does with 'keypoints'.
  """
  shp, exp = param[12:52, None], param[52:, None]
  flat = arrays["u"][index] + arrays["w_shp"][index, :40] @ shp + arrays["w_exp"][index, :10] @ exp
  return flat.reshape(3, -1, order="F")


def _convert(source, tri_path="tri_path"):
  return converters.convert_3ddfa_bfm(source["bfm"], source["params"], source[tri_path] if tri_path else None)


def test_vertices_match_3ddfa_reconstruction(source):
  model = _convert(source)
  assert (model.num_vertices, model.num_id, model.num_exp) == (N, 40, 10)
  assert model.mean.dtype == np.float32 and model.triangles.dtype == np.int32
  rng = np.random.default_rng(1)
  mean, std = source["stats"]["mean"].astype(np.float64), source["stats"]["std"].astype(np.float64)
  for param in (mean, mean + std * rng.normal(size=62)):
    a_id = (param[12:52] - mean[12:52]) / std[12:52]
    a_exp = (param[52:] - mean[52:]) / std[52:]
    ours = np.asarray(face3d.vertices(model, a_id, a_exp))
    np.testing.assert_allclose(ours.T, _tddfa_vertices(source["arrays"], param), rtol=1e-5, atol=0.05)
    sparse = _tddfa_vertices(source["arrays"], param, source["arrays"]["keypoints"])
    np.testing.assert_allclose(ours[model.landmarks].T, sparse, rtol=1e-5, atol=0.05)


def test_landmarks_and_triangles(source):
  model = _convert(source)
  np.testing.assert_array_equal(np.asarray(model.landmarks), source["landmarks"])
  triangles = np.asarray(model.triangles)
  # The file's clockwise triangles come back counter-clockwise: the same vertex triples, each
  # with positive signed area seen from +z.
  assert sorted(map(sorted, triangles.tolist())) == sorted(map(sorted, source["triangles"].tolist()))
  mean = np.asarray(model.mean)
  a, b, c = (mean[triangles[:, i]] for i in range(3))
  assert np.all(np.cross(b - a, c - a)[:, 2] > 0)


def test_one_based_triangles_in_the_bfm_file(source, tmp_path):
  with_tri = dict(source["arrays"], tri=source["tri"] + 1)
  source["bfm"] = _dump(tmp_path / "bfm_with_tri.pkl", with_tri)
  np.testing.assert_array_equal(np.asarray(_convert(source, tri_path=None).triangles),
                                np.asarray(_convert(source).triangles))


def test_counter_clockwise_triangles_are_kept(source, tmp_path):
  source["tri_path"] = _dump(tmp_path / "tri_ccw.pkl", source["triangles"].T.copy())
  np.testing.assert_array_equal(np.asarray(_convert(source).triangles), source["triangles"])


def test_round_trip_through_npz(source, tmp_path):
  model = _convert(source)
  path = tmp_path / "model.npz"
  face3d.save(model, path)
  loaded = face3d.load(path)
  assert (loaded.name, loaded.licence) == ("bfm-3ddfa-v2", converters.BFM_LICENCE)
  assert "non-commercial" in loaded.licence
  assert face3d.content_hash(loaded) == face3d.content_hash(model)


def test_warns_about_pickle(source):
  with pytest.warns(UserWarning, match="trusted source"):
    _convert(source)


def test_describe_lists_keys_and_shapes(source):
  text = converters.describe_3ddfa_bfm(source["bfm"], source["params"], source["tri_path"])
  assert source["bfm"] in text and source["tri_path"] in text
  assert f"w_shp        float32 [{3 * N}, {SHAPE_COLUMNS}]" in text
  assert "mean         float32 [62]" in text
  assert f"(array)      int64 [3, {len(source['triangles'])}]" in text


@pytest.mark.parametrize("file, key, value, problem", [
    ("bfm", "w_exp", None, "missing"),
    ("bfm", "w_exp", np.zeros((3 * N - 3, 10), np.float32), "must be [3N="),
    ("bfm", "w_shp", np.zeros((3 * N, 39), np.float32), ">= 40"),
    ("bfm", "u", np.zeros((3 * N + 1, 1), np.float32), "x, y, z of N >= 3 vertices"),
    ("bfm", "keypoints", np.arange(68 * 3) + 1, "3v, 3v + 1, 3v + 2"),
    ("bfm", "keypoints", np.arange(67 * 3), "must hold 204 indices"),
    ("params", "mean", np.zeros(60, np.float32), "3DDFA_V2 parameters have"),
    ("params", "std", np.zeros(62, np.float32), "must be positive"),
])
def test_malformed_key_names_file_and_key(source, tmp_path, file, key, value, problem):
  contents = dict(source["arrays"] if file == "bfm" else source["stats"])
  if value is None:
    del contents[key]
  else:
    contents[key] = value
  source[file] = _dump(tmp_path / f"bad_{file}.pkl", contents)
  with pytest.raises(face3d.ModelFileError, match=f"key '{key}'") as error:
    _convert(source)
  assert source[file] in str(error.value) and problem in str(error.value)
  assert error.value.key == key


def test_bad_triangle_file(source, tmp_path):
  source["tri_path"] = _dump(tmp_path / "tri_bad.pkl", source["tri"].T.copy())
  with pytest.raises(face3d.ModelFileError, match=r"tri_bad\.pkl: must be \[3, F\]"):
    _convert(source)
  source["tri_path"] = _dump(tmp_path / "tri_range.pkl", source["tri"] + 5)
  with pytest.raises(face3d.ModelFileError, match=r"indices must lie in \[0, N=80\)"):
    _convert(source)


def test_missing_file_and_missing_tri(source, tmp_path):
  with pytest.raises(face3d.ModelFileError, match="nowhere.pkl: no such file"):
    converters.convert_3ddfa_bfm(tmp_path / "nowhere.pkl", source["params"], source["tri_path"])
  with pytest.raises(face3d.ModelFileError, match="key 'tri': missing: give the triangle file"):
    _convert(source, tri_path=None)


class _Payload:
  """Pickles as a call of os.mkdir: what a crafted file could make an ordinary unpickler do."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return os.mkdir, (self.path,)


def test_pickle_naming_other_callables_is_refused(source, tmp_path):
  marker = tmp_path / "created_by_pickle"
  source["bfm"] = _dump(tmp_path / "crafted.pkl", {"u": _Payload(str(marker))})
  with pytest.raises(face3d.ModelFileError, match="crafted.pkl: not a readable pickle of NumPy arrays"):
    _convert(source)
  assert not marker.exists()


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "data_prep.convert_face_model", *args],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_cli_end_to_end(source, tmp_path):
  out = tmp_path / "bfm.npz"
  result = _run_cli("--format=3ddfa_v2", f"--bfm={source['bfm']}", f"--params={source['params']}",
                    f"--tri={source['tri_path']}", f"--out={out}")
  assert result.returncode == 0, result.stderr
  assert f"w_shp        float32 [{3 * N}, {SHAPE_COLUMNS}]" in result.stdout
  assert f"N={N} vertices, F={len(source['triangles'])} triangles, K_id=40, K_exp=10" in result.stdout
  assert "non-commercial" in result.stdout
  assert result.stderr.count("unpickling can run code") == 3
  assert face3d.content_hash(face3d.load(out)) == face3d.content_hash(_convert(source))


def test_cli_errors_are_one_line(source, tmp_path, capsys):
  missing = tmp_path / "bfm_noneck_v3_missing.pkl"
  out = tmp_path / "bfm.npz"
  assert convert_face_model.main(["--format=3ddfa_v2", f"--bfm={missing}", f"--params={source['params']}",
                                  f"--out={out}"]) == 1
  assert capsys.readouterr().err.splitlines()[-1] == f"error: {missing}: no such file"
  assert not out.exists()
  unwritable = tmp_path / "no_such_dir" / "bfm.npz"
  assert convert_face_model.main(["--format=3ddfa_v2", f"--bfm={source['bfm']}", f"--params={source['params']}",
                                  f"--tri={source['tri_path']}", f"--out={unwritable}"]) == 1
  assert capsys.readouterr().err.splitlines() == [f"error: --out={unwritable}: its folder {unwritable.parent} does "
                                                  "not exist"]
  # The output is checked before the conversion: an input named as the output is refused, untouched.
  before = open(source["params"], "rb").read()
  assert convert_face_model.main(["--format=3ddfa_v2", f"--bfm={source['bfm']}", f"--params={source['params']}",
                                  f"--out={source['params']}"]) == 1
  assert capsys.readouterr().err.splitlines() == [
      f"error: --out={source['params']}: is also an input ({source['params']}); writing it would destroy the input: "
      "choose another output path"]
  assert open(source["params"], "rb").read() == before


def test_cli_requires_format_inputs(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    convert_face_model.main(["--format=3ddfa_v2", f"--out={tmp_path / 'bfm.npz'}"])
  assert exit_.value.code == 2
  assert "--format=3ddfa_v2 needs --bfm and --params" in capsys.readouterr().err


# --- fit_similarity ----------------------------------------------------------------------------


def _rotation(rotvec):
  from scipy.spatial.transform import Rotation
  return Rotation.from_rotvec(rotvec).as_matrix()


def test_fit_similarity_recovers_a_known_transform_batched():
  rng = np.random.default_rng(2)
  source = rng.normal(size=(4, 30, 3))
  rotation = np.stack([_rotation(v) for v in rng.normal(size=(4, 3))])
  scale, translation = rng.uniform(0.5, 3.0, size=4), rng.normal(size=(4, 3))
  target = scale[:, None, None] * source @ np.swapaxes(rotation, 1, 2) + translation[:, None, :]
  got_scale, got_rotation, got_translation = converters.fit_similarity(source, target)
  np.testing.assert_allclose(got_scale, scale, rtol=1e-10)
  np.testing.assert_allclose(got_rotation, rotation, atol=1e-10)
  np.testing.assert_allclose(got_translation, translation, atol=1e-10)


def test_fit_similarity_matches_brute_force_least_squares():
  """On noisy points (and a reflected target, which a proper rotation cannot fit) the closed form
  reaches the residual of a general optimiser started from many rotations."""
  from scipy.optimize import least_squares
  rng = np.random.default_rng(3)
  source = rng.normal(size=(25, 3))
  for target in (1.7 * source @ _rotation([0.3, -1.2, 0.5]).T + 2.0 + 0.3 * rng.normal(size=(25, 3)),
                 source * [1.0, 1.0, -1.0] + 0.1 * rng.normal(size=(25, 3))):
    scale, rotation, translation = converters.fit_similarity(source, target)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    ours = np.square(scale * source @ rotation.T + translation - target).sum()

    def residual(p):
      return (np.exp(p[3]) * source @ _rotation(p[:3]).T + p[4:] - target).reshape(-1)

    best = min(np.square(least_squares(residual, np.concatenate([start, [0.0], np.zeros(3)])).fun).sum()
               for start in rng.normal(size=(20, 3)) * 2.0)
    assert ours == pytest.approx(best, rel=1e-7)


# --- Deep3DFaceRecon's BFM_model_front.mat ------------------------------------------------------

K_ID_DEEP3D, K_EXP_DEEP3D = 6, 4


@pytest.fixture
def deep3d(tmp_path):
  """A BFM_model_front.mat in Deep3DFaceRecon's layout: [1, 3N] rows, [3N, K] bases, 1-based [F, 3]
  triangles (clockwise from the front here) and [1, 68] keypoints, decimetre-sized values."""
  rng = np.random.default_rng(4)
  vertices, triangles = _grid()
  landmarks = rng.choice(N, size=68, replace=False)
  contents = {
      "meanshape": (0.8 * vertices + [0.1, 0.2, 0.3]).reshape(1, -1),
      "idBase": 1e-3 * rng.normal(size=(3 * N, K_ID_DEEP3D)),
      "exBase": (1e-3 * rng.normal(size=(3 * N, K_EXP_DEEP3D))).astype(np.float32),
      "meantex": rng.uniform(0, 255, size=(1, 3 * N)),
      "texBase": rng.normal(size=(3 * N, 5)),
      "tri": (triangles[:, [0, 2, 1]] + 1).astype(np.float64),
      "keypoints": (landmarks + 1)[None, :].astype(np.float64),
      "point_buf": np.ones((N, 8)),
      "skinmask": np.ones((1, N)),
  }
  path = tmp_path / "BFM_model_front.mat"
  scipy_io.savemat(path, contents)
  return {"path": str(path), "contents": contents, "triangles": triangles, "landmarks": landmarks}


def _write_mat(tmp_path, contents, name="bad.mat"):
  path = tmp_path / name
  scipy_io.savemat(path, contents)
  return str(path)


def assert_same_triangles_wound_counter_clockwise(model, triangles):
  """The model has the source's triangles (any vertex order), each counter-clockwise seen from +z."""
  converted = np.asarray(model.triangles)
  assert sorted(map(sorted, converted.tolist())) == sorted(map(sorted, np.asarray(triangles).tolist()))
  mean = np.asarray(model.mean)
  a, b, c = (mean[converted[:, i]] for i in range(3))
  assert np.all(np.cross(b - a, c - a)[:, 2] > 0)


def test_deep3d_vertices_match_deep3dfacerecon(deep3d):
  model = converters.convert_deep3d_bfm(deep3d["path"])
  assert (model.num_vertices, model.num_id, model.num_exp) == (N, K_ID_DEEP3D, K_EXP_DEEP3D)
  assert model.name == "bfm09_deep3d" and "non-commercial" in model.licence and "FaceWarehouse" in model.licence
  c = deep3d["contents"]
  rng = np.random.default_rng(5)
  a_id, a_exp = rng.normal(size=K_ID_DEEP3D), rng.normal(size=K_EXP_DEEP3D)
  # models/bfm.py: the recentred mean, then the bases' coefficients as they are, reshaped [N, 3].
  centred = c["meanshape"].reshape(-1, 3) - c["meanshape"].reshape(-1, 3).mean(axis=0)
  expected = centred.reshape(-1) + c["idBase"] @ a_id + c["exBase"] @ a_exp
  np.testing.assert_allclose(np.asarray(face3d.vertices(model, a_id, a_exp)), expected.reshape(-1, 3), atol=1e-6)
  np.testing.assert_allclose(np.asarray(model.albedo), c["meantex"].reshape(-1, 3) / 255.0, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(model.landmarks), deep3d["landmarks"])
  assert_same_triangles_wound_counter_clockwise(model, deep3d["triangles"])


def test_deep3d_without_recentring_keeps_the_origin(deep3d):
  model = converters.convert_deep3d_bfm(deep3d["path"], recenter=False)
  np.testing.assert_allclose(np.asarray(model.mean), deep3d["contents"]["meanshape"].reshape(-1, 3), atol=1e-6)


def test_deep3d_meantex_out_of_range_drops_albedo(deep3d, tmp_path):
  contents = dict(deep3d["contents"], meantex=deep3d["contents"]["meantex"] + 300.0)
  with pytest.warns(UserWarning, match="'meantex' spans .* without albedo"):
    model = converters.convert_deep3d_bfm(_write_mat(tmp_path, contents))
  assert model.albedo is None


@pytest.mark.parametrize("key, value, problem", [
    ("exBase", None, "missing"),
    ("idBase", np.zeros((3 * N - 3, 4)), "must be [3N=240, K] (3N from 'meanshape')"),
    ("meanshape", np.zeros((1, 3 * N + 1)), "x, y, z of N >= 3 vertices"),
    ("tri", np.zeros((5, 4)), "must be [F, 3]"),
    ("tri", np.array([[0, 1, 2]]), "1-based vertex indices in [1, N=80], found [0, 2]"),
    ("keypoints", np.arange(1, 68)[None], "must hold 68 vertex indices, got 67"),
    ("keypoints", np.arange(1, 69)[None] + 0.5, "must hold integer indices"),
    ("meantex", np.zeros((1, 3)), "RGB of N=80 vertices"),
])
def test_deep3d_malformed_key_names_file_and_key(deep3d, tmp_path, key, value, problem):
  contents = dict(deep3d["contents"])
  if value is None:
    del contents[key]
  else:
    contents[key] = value
  path = _write_mat(tmp_path, contents)
  with pytest.raises(face3d.ModelFileError, match=f"key '{key}'") as error:
    converters.convert_deep3d_bfm(path)
  assert str(error.value).startswith(path) and problem in str(error.value)


def test_deep3d_missing_or_unreadable_file(tmp_path):
  with pytest.raises(face3d.ModelFileError, match="nowhere.mat: no such file"):
    converters.convert_deep3d_bfm(tmp_path / "nowhere.mat")
  garbage = tmp_path / "garbage.mat"
  garbage.write_bytes(b"this is not a MATLAB file" * 10)
  with pytest.raises(face3d.ModelFileError, match="garbage.mat: not a readable MATLAB .mat file"):
    converters.convert_deep3d_bfm(garbage)


def test_deep3d_cli(deep3d, tmp_path, capsys):
  out = tmp_path / "bfm09_deep3d.npz"
  assert convert_face_model.main(["--format=deep3d_bfm", f"--mat={deep3d['path']}", f"--out={out}"]) == 0
  stdout = capsys.readouterr().out
  assert f"idBase       float64 [{3 * N}, {K_ID_DEEP3D}]" in stdout and "point_buf" in stdout
  assert f"N={N} vertices, F={len(deep3d['triangles'])} triangles, K_id={K_ID_DEEP3D}, K_exp={K_EXP_DEEP3D}" in stdout
  assert face3d.content_hash(face3d.load(out)) == face3d.content_hash(converters.convert_deep3d_bfm(deep3d["path"]))
  with pytest.raises(SystemExit):
    convert_face_model.main(["--format=deep3d_bfm", f"--out={out}"])
  assert "--format=deep3d_bfm needs --mat" in capsys.readouterr().err


# --- the Surrey Face Model as eos ships it -------------------------------------------------------

# eos's ibug_to_sfm.txt maps the chin but no other jaw-line point, and neither inner mouth corner.
SFM_MAPPED = [9] + list(range(18, 61)) + [62, 63, 64, 66, 67, 68]
K_ID_SFM, NUM_BLENDSHAPES = 5, 3


@pytest.fixture(scope="module")
def template():
  model = face3d.procedural_model(detail="low")
  return np.asarray(model.mean, np.float64)[np.asarray(model.landmarks)]


@pytest.fixture
def sfm(tmp_path, template):
  """eos files for a mesh holding the 68 template landmarks (millimetre-sized, turned a little) at
  shuffled vertex ids, and a grid far behind them that carries the (clockwise) triangles."""
  mm = pytest.importorskip("eos").morphablemodel
  rng = np.random.default_rng(6)
  grid, grid_triangles = _grid()
  points = np.concatenate([60.0 * template @ _rotation([0.1, -0.2, 0.05]).T + [3.0, -5.0, 40.0],
                           80.0 * grid - [0.0, 0.0, 300.0]])
  order = rng.permutation(len(points))
  mean = np.empty_like(points)
  mean[order] = points
  n = len(points)
  landmark_ids, triangles = order[:68], order[68:][grid_triangles][:, [0, 2, 1]]
  basis, _ = np.linalg.qr(rng.normal(size=(3 * n, K_ID_SFM)))
  eigenvalues = np.array([9.0, 4.0, 2.0, 1.0, 0.25])
  deformations = rng.normal(size=(NUM_BLENDSHAPES, 3 * n))
  colour = rng.uniform(size=3 * n)
  shape = mm.PcaModel(mean.reshape(-1).astype(np.float32), basis.astype(np.float32), eigenvalues.astype(np.float32),
                      triangles.tolist())
  colour_model = mm.PcaModel(colour.astype(np.float32), np.zeros((3 * n, 1), np.float32), np.zeros(1, np.float32),
                             triangles.tolist())
  paths = {key: str(tmp_path / name) for key, name in
           [("model", "sfm_shape_test.bin"), ("blendshapes", "expression_blendshapes_test.bin"),
            ("landmarks", "ibug_to_sfm.txt")]}
  mm.save_model(mm.MorphableModel(shape, colour_model), paths["model"])
  mm.save_blendshapes([mm.Blendshape(f"expression{b}", d.astype(np.float32)) for b, d in enumerate(deformations)],
                      paths["blendshapes"])
  _write_mapping(paths["landmarks"], {k: int(landmark_ids[k - 1]) for k in SFM_MAPPED})
  return dict(paths, eos=mm, mean=mean, basis=basis, eigenvalues=eigenvalues, deformations=deformations, colour=colour,
              landmark_ids=landmark_ids, triangles=triangles, n=n)


def _write_mapping(path, mapping, table="landmark_mappings"):
  lines = ["# iBUG number = vertex id", f"[{table}]"] + [f"{k} = {v}" for k, v in mapping.items()]
  lines += ["", "[contour_landmarks]", 'right = [ "1", "2" ]']
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return str(path)


def _convert_sfm(sfm, **kwargs):
  return converters.convert_sfm(sfm["model"], sfm["blendshapes"], sfm["landmarks"], **kwargs)


def test_sfm_arrays_match_hand_computation(sfm):
  model = _convert_sfm(sfm)
  n = sfm["n"]
  assert (model.num_vertices, model.num_id, model.num_exp, model.name) == (n, K_ID_SFM, NUM_BLENDSHAPES, f"sfm_{n}")
  assert "non-commercial" in model.licence
  np.testing.assert_allclose(np.asarray(model.mean), sfm["mean"], atol=1e-4)
  # identity axes: orthonormal basis times sqrt(eigenvalue); expression axes: blendshape * 0.5.
  expected_id = sfm["basis"] * np.sqrt(sfm["eigenvalues"])
  np.testing.assert_allclose(np.asarray(model.id_basis).reshape(3 * n, -1), expected_id, atol=1e-6)
  np.testing.assert_allclose(np.asarray(model.exp_basis).reshape(3 * n, -1), 0.5 * sfm["deformations"].T, atol=1e-6)
  np.testing.assert_allclose(np.asarray(model.albedo), sfm["colour"].reshape(n, 3), atol=1e-6)
  doubled = _convert_sfm(sfm, blendshape_std=1.0)
  np.testing.assert_allclose(np.asarray(doubled.exp_basis), 2 * np.asarray(model.exp_basis), rtol=1e-6)
  assert_same_triangles_wound_counter_clockwise(model, sfm["triangles"])


def test_sfm_unmapped_landmarks_land_on_the_template_vertices(sfm):
  model = _convert_sfm(sfm)
  np.testing.assert_array_equal(np.asarray(model.landmarks), sfm["landmark_ids"])
  landmarks, placed = converters.complete_landmarks(converters.read_landmark_mapping(sfm["landmarks"]), sfm["mean"])
  assert placed == list(range(1, 9)) + list(range(10, 18)) + [61, 65]
  np.testing.assert_array_equal(landmarks, sfm["landmark_ids"])


def test_sfm_describe_and_cli(sfm, tmp_path, capsys):
  text = converters.describe_sfm(sfm["model"], sfm["blendshapes"], sfm["landmarks"])
  assert f"{sfm['n']} vertices, {K_ID_SFM} components" in text and "expression0, expression1" in text
  assert "50 of 68 iBUG landmarks mapped" in text and "[1, 2, 3, 4, 5, 6, 7, 8, 10," in text
  out = tmp_path / "sfm.npz"
  assert convert_face_model.main(["--format=sfm", f"--sfm_model={sfm['model']}", f"--sfm_blendshapes={sfm['blendshapes']}",
                                  f"--sfm_landmarks={sfm['landmarks']}", f"--out={out}"]) == 0
  stdout = capsys.readouterr().out
  assert "each blendshape times 0.5" in stdout and f"K_id={K_ID_SFM}, K_exp={NUM_BLENDSHAPES}" in stdout
  assert face3d.content_hash(face3d.load(out)) == face3d.content_hash(_convert_sfm(sfm))
  with pytest.raises(SystemExit):
    convert_face_model.main(["--format=sfm", f"--sfm_model={sfm['model']}", f"--out={out}"])
  assert "--format=sfm needs --sfm_blendshapes and --sfm_landmarks" in capsys.readouterr().err


def test_sfm_mapping_errors(sfm, tmp_path):
  ids = sfm["landmark_ids"]
  cases = [
      ({k: int(ids[k - 1]) for k in SFM_MAPPED} | {69: 0}, "'69' is not an iBUG-68 landmark number"),
      ({k: int(ids[k - 1]) for k in SFM_MAPPED} | {1: -3}, "landmark 1: the vertex id must be a non-negative"),
      ({k: int(ids[k - 1]) for k in SFM_MAPPED} | {1: sfm["n"]}, f"vertex ids must lie in [0, N={sfm['n']})"),
      ({k: int(ids[k - 1]) for k in range(18, 23)}, "maps 5 landmarks; at least 8"),
  ]
  for mapping, problem in cases:
    sfm["landmarks"] = _write_mapping(tmp_path / "mapping.txt", mapping)
    with pytest.raises(face3d.ModelFileError, match="key 'landmark_mappings'") as error:
      _convert_sfm(sfm)
    assert str(error.value).startswith(sfm["landmarks"]) and problem in str(error.value)
  sfm["landmarks"] = _write_mapping(tmp_path / "other_table.txt", {9: 0}, table="mappings")
  with pytest.raises(face3d.ModelFileError, match="key 'landmark_mappings': missing"):
    _convert_sfm(sfm)


def test_sfm_file_errors(sfm, tmp_path, monkeypatch):
  with pytest.raises(face3d.ModelFileError, match="nowhere.bin: no such file"):
    converters.convert_sfm(tmp_path / "nowhere.bin", sfm["blendshapes"], sfm["landmarks"])
  garbage = tmp_path / "garbage.bin"
  garbage.write_bytes(b"\xff" * 64)
  with pytest.raises(face3d.ModelFileError, match="garbage.bin: not a readable eos MorphableModel"):
    converters.convert_sfm(garbage, sfm["blendshapes"], sfm["landmarks"])
  mm = sfm["eos"]
  short = str(tmp_path / "short_blendshapes.bin")
  mm.save_blendshapes([mm.Blendshape("smile", np.zeros(6, np.float32))], short)
  with pytest.raises(face3d.ModelFileError, match=f"short_blendshapes.bin: key 'smile': deformation has 6 numbers, the model 3N={3 * sfm['n']}"):
    converters.convert_sfm(sfm["model"], short, sfm["landmarks"])
  with pytest.raises(ValueError, match="blendshape_std must be positive"):
    _convert_sfm(sfm, blendshape_std=0.0)
  monkeypatch.setitem(sys.modules, "eos", None)
  with pytest.raises(face3d.ModelFileError, match="needs eos-py: pip install eos-py"):
    _convert_sfm(sfm)
