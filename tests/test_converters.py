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
  assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: cannot write {unwritable}")


def test_cli_requires_format_inputs(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    convert_face_model.main(["--format=3ddfa_v2", f"--out={tmp_path / 'bfm.npz'}"])
  assert exit_.value.code == 2
  assert "--format=3ddfa_v2 needs --bfm and --params" in capsys.readouterr().err
