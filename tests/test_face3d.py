"""face3d: eq. 3/4, the camera, Euler angles, model files and mesh export."""

import numpy as np
import pytest
import trimesh

from tfvgan_jax import face3d
from tfvgan_jax.face3d import Camera, ModelFileError, MorphableModel


def tiny_model(n=7, k_id=4, k_exp=3, seed=0, albedo=True):
  rng = np.random.default_rng(seed)
  tris = np.array([[i, (i + 1) % n, (i + 2) % n] for i in range(n)], np.int32)
  return MorphableModel(
      mean=rng.normal(size=(n, 3)).astype(np.float32),
      id_basis=rng.normal(size=(n, 3, k_id)).astype(np.float32),
      exp_basis=rng.normal(size=(n, 3, k_exp)).astype(np.float32),
      triangles=tris,
      landmarks=(np.arange(68) % n).astype(np.int32),
      albedo=rng.uniform(size=(n, 3)).astype(np.float32) if albedo else None,
      name="tiny",
      licence="CC0",
  )


def test_vertices_matches_direct_sum():
  """Eq. 3/4: S = mean + sum_k A_id[:, :, k] a_id[k] + sum_k A_exp[:, :, k] a_exp[k], looped by hand."""
  model = tiny_model()
  rng = np.random.default_rng(1)
  a_id = rng.normal(size=(2, 4))
  a_exp = rng.normal(size=(2, 3))
  got = np.asarray(face3d.vertices(model, a_id, a_exp))
  assert got.shape == (2, 7, 3)
  for b in range(2):
    want = np.array(model.mean, np.float64)
    for k in range(4):
      want = want + np.asarray(model.id_basis)[:, :, k] * a_id[b, k]
    for k in range(3):
      want = want + np.asarray(model.exp_basis)[:, :, k] * a_exp[b, k]
    np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-5)


def test_vertices_recombination_takes_identity_and_expression_separately():
  model = tiny_model()
  a_id, a_exp = np.ones(4), np.zeros(3)
  shape_only = np.asarray(face3d.vertices(model, a_id, a_exp))
  np.testing.assert_allclose(shape_only, np.asarray(model.mean) + np.asarray(model.id_basis).sum(-1), rtol=1e-5, atol=1e-5)


def test_vertices_rejects_wrong_sizes():
  with pytest.raises(ValueError, match="K_id=4"):
    face3d.vertices(tiny_model(), np.zeros(5), np.zeros(3))
  with pytest.raises(ValueError, match="K_exp=3"):
    face3d.vertices(tiny_model(), np.zeros(4), np.zeros(2))


def rotation_x(a):
  return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def rotation_y(a):
  return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def rotation_z(a):
  return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def test_euler_to_matrix_is_rz_ry_rx():
  rng = np.random.default_rng(2)
  for pitch, yaw, roll in rng.uniform(-3, 3, size=(10, 3)):
    want = rotation_z(roll) @ rotation_y(yaw) @ rotation_x(pitch)
    got = np.asarray(face3d.euler_to_matrix(np.array([pitch, yaw, roll])))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_euler_round_trip():
  rng = np.random.default_rng(3)
  poses = np.concatenate([rng.uniform(-np.pi, np.pi, (200, 1)), rng.uniform(-1.5, 1.5, (200, 1)),
                          rng.uniform(-np.pi, np.pi, (200, 1))], axis=1)
  back = np.asarray(face3d.matrix_to_euler(face3d.euler_to_matrix(poses)))
  np.testing.assert_allclose(back, poses, atol=2e-4)


def test_euler_at_gimbal_lock_still_gives_the_same_rotation():
  pose = np.array([0.3, np.pi / 2, 0.2])
  rotation = np.asarray(face3d.euler_to_matrix(pose))
  back = np.asarray(face3d.matrix_to_euler(rotation))
  np.testing.assert_allclose(np.asarray(face3d.euler_to_matrix(back)), rotation, atol=1e-3)


def test_project_conventions():
  """Model y up -> screen y down; z toward the viewer -> larger depth; yaw turns the nose to the right."""
  points = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], np.float32)
  cam = Camera.create(scale=10.0, translation=(50.0, 60.0))
  screen = np.asarray(face3d.project(points, cam))
  np.testing.assert_allclose(screen, [[50, 60, 0], [50, 50, 0], [60, 60, 0], [50, 60, 10]], atol=1e-5)
  nose = np.asarray(face3d.project(points[3:], Camera.create(yaw=0.5, scale=10.0)))[0]
  assert nose[0] > 0
  nose = np.asarray(face3d.project(points[3:], Camera.create(pitch=0.5, scale=10.0)))[0]
  assert nose[1] > 0, "positive pitch tips the nose down (screen y grows)"


def test_project_matches_numpy_and_batches():
  rng = np.random.default_rng(4)
  verts = rng.normal(size=(3, 5, 3)).astype(np.float32)
  vec = np.concatenate([rng.uniform(-1, 1, (3, 3)), rng.uniform(1, 3, (3, 1)), rng.uniform(0, 100, (3, 2))], 1)
  got = np.asarray(face3d.project(verts, Camera.from_vector(vec)))
  for b in range(3):
    r = rotation_z(vec[b, 2]) @ rotation_y(vec[b, 1]) @ rotation_x(vec[b, 0])
    rotated = verts[b] @ r.T
    want = np.stack([vec[b, 3] * rotated[:, 0] + vec[b, 4], vec[b, 5] - vec[b, 3] * rotated[:, 1], vec[b, 3] * rotated[:, 2]], -1)
    np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(Camera.from_vector(vec).to_vector()), vec, rtol=1e-6)
  with pytest.raises(ValueError, match="6 entries"):
    Camera.from_vector(np.zeros(7))


def test_project_face_is_the_recombined_shape_through_the_camera():
  """Eq. 4 with identity from one face and expression from another, then the camera, in NumPy."""
  model = tiny_model()
  rng = np.random.default_rng(5)
  a_id, a_exp = rng.normal(size=4), rng.normal(size=3)
  vec = np.array([0.2, -0.4, 0.1, 2.5, 30.0, 40.0])
  got = np.asarray(face3d.project_face(model, a_id, a_exp, vec))
  shape = np.asarray(model.mean) + np.asarray(model.id_basis) @ a_id + np.asarray(model.exp_basis) @ a_exp
  rotated = shape @ (rotation_z(vec[2]) @ rotation_y(vec[1]) @ rotation_x(vec[0])).T
  want = np.stack([vec[3] * rotated[:, 0] + vec[4], vec[5] - vec[3] * rotated[:, 1], vec[3] * rotated[:, 2]], -1)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_npz_round_trip(tmp_path):
  model = tiny_model()
  path = tmp_path / "m.npz"
  face3d.save(model, path)
  back = face3d.load(path)
  assert back.name == "tiny" and back.licence == "CC0"
  for key in ("mean", "id_basis", "exp_basis", "triangles", "landmarks", "albedo"):
    np.testing.assert_array_equal(np.asarray(getattr(back, key)), np.asarray(getattr(model, key)))
  assert face3d.content_hash(back) == face3d.content_hash(model)
  without_albedo = tiny_model(albedo=False)
  face3d.save(without_albedo, path)
  assert face3d.load(path).albedo is None


def write_npz(path, **overrides):
  arrays = face3d.io.model_arrays(tiny_model())
  arrays.update(format_version=np.int32(1), name=np.str_("tiny"), licence=np.str_("CC0"))
  for key, value in overrides.items():
    if value is None:
      arrays.pop(key)
    else:
      arrays[key] = value
  np.savez(path, **arrays)
  return path


@pytest.mark.parametrize("overrides, key, message", [
    (dict(mean=None), "mean", "missing"),
    (dict(triangles=np.array([[0, 1, 7]], np.int32)), "triangles", r"indices must lie in \[0, 7\)"),
    (dict(triangles=np.array([[0, 1, -1]], np.int32)), "triangles", "indices must lie"),
    (dict(triangles=np.zeros((3, 4), np.int32)), "triangles", r"must be \[F, 3\]"),
    (dict(triangles=np.zeros((3, 3), np.float32)), "triangles", "must be integer"),
    (dict(landmarks=np.arange(67, dtype=np.int32) % 7), "landmarks", r"must be \[68\]"),
    (dict(landmarks=np.full(68, 9, np.int32)), "landmarks", "indices must lie"),
    (dict(id_basis=np.zeros((6, 3, 4), np.float32)), "id_basis", r"must be \[N=7, 3, K\]"),
    (dict(exp_basis=np.zeros((7, 2, 3), np.float32)), "exp_basis", r"must be \[N=7, 3, K\]"),
    (dict(mean=np.full((7, 3), np.nan, np.float32)), "mean", "NaN or Inf"),
    (dict(mean=np.zeros((7, 3), np.int32)), "mean", "floating point"),
    (dict(albedo=np.full((7, 3), 2.0, np.float32)), "albedo", r"must lie in \[0, 1\]"),
    (dict(format_version=np.int32(99)), "format_version", "version 99"),
    (dict(format_version=None), "format_version", "missing"),
])
def test_load_rejects_bad_files_naming_file_and_key(tmp_path, overrides, key, message):
  path = write_npz(tmp_path / "bad.npz", **overrides)
  with pytest.raises(ModelFileError, match=message) as info:
    face3d.load(path)
  assert str(path) in str(info.value) and f"key {key!r}" in str(info.value)
  assert info.value.key == key


def test_load_rejects_missing_corrupt_and_pickled_files(tmp_path):
  with pytest.raises(ModelFileError, match="no such file"):
    face3d.load(tmp_path / "absent.npz")
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(b"PK\x03\x04 definitely not a zip")
  with pytest.raises(ModelFileError, match="corrupt.npz"):
    face3d.load(corrupt)
  pickled = write_npz(tmp_path / "pickled.npz", name=np.array([{"a": 1}], dtype=object))
  with pytest.raises(ModelFileError, match="pickled"):
    face3d.load(pickled)


def test_save_refuses_an_invalid_model(tmp_path):
  bad = tiny_model().replace(triangles=np.array([[0, 1, 70]], np.int32))
  with pytest.raises(ModelFileError, match="triangles"):
    face3d.save(bad, tmp_path / "x.npz")
  assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("ext", [".obj", ".ply"])
def test_export_mesh_reads_back(tmp_path, ext):
  model = tiny_model(n=9)
  verts = np.asarray(face3d.vertices(model, np.ones(4), np.zeros(3)))
  path = tmp_path / f"face{ext}"
  face3d.export_mesh(path, verts, model)
  mesh = trimesh.load(path, process=False)
  np.testing.assert_allclose(mesh.vertices, verts, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(mesh.faces, np.asarray(model.triangles))
  if ext == ".ply":
    colors = mesh.visual.vertex_colors[:, :3]
    np.testing.assert_array_equal(colors, np.round(np.asarray(model.albedo) * 255).astype(np.uint8))


def test_export_mesh_rejects_bad_input(tmp_path):
  model = tiny_model()
  with pytest.raises(ValueError, match=r"\.stl"):
    face3d.export_mesh(tmp_path / "a.stl", np.asarray(model.mean), model)
  with pytest.raises(ValueError, match=r"vertices must be \[7, 3\]"):
    face3d.export_mesh(tmp_path / "a.obj", np.zeros((3, 3)), model)
