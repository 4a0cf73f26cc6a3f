"""Tests of prep.learn_model on clips drawn from a known linear model over the 468 Face Mesh points.

The synthetic face puts the topology's loops where they belong (eye openings and lips as ellipses,
the face oval around them, the other points scattered in between) on a dome facing +z, with an open
mouth. Identity and expression directions are random, orthonormal, and orthogonal to the
similarity motions of the mean (which alignment removes by design); each frame is moved by a
random similarity into screen space (y down, pixels).
"""

import numpy as np
import pytest
from scipy import linalg
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from tfvgan_jax import face3d, render
from tfvgan_jax.face3d.converters import fit_similarity
from tfvgan_jax.prep import learn_model, topology

N = topology.NUM_POINTS
ID_STDS = np.array([1.0, 0.7, 0.5, 0.35])
EXP_STDS = np.array([0.8, 0.6, 0.4])
CLIPS, NEUTRAL_FRAMES, EXPRESSIVE_FRAMES = 24, 9, 7
EYES = [((-0.35, 0.3), topology.RIGHT_EYE_LOOP, np.pi, 1.0), ((0.35, 0.3), topology.LEFT_EYE_LOOP, 0.0, -1.0)]
EYE_RADII, MOUTH_CENTRE, INNER_LIP_RADII, OUTER_LIP_RADII, OVAL_RADII = (0.15, 0.06), (0.0, -0.5), (0.25, 0.08), (0.3, 0.16), (0.8, 1.1)


def _ellipse(centre, radii, angles):
  return np.stack([centre[0] + radii[0] * np.cos(angles), centre[1] + radii[1] * np.sin(angles)], axis=-1)


def _inside_ellipse(xy, centre, radii, margin):
  return np.square((xy[:, 0] - centre[0]) / (margin * radii[0])) + np.square((xy[:, 1] - centre[1]) / (margin * radii[1])) < 1


def _synthetic_face(rng):
  """[468, 3] frontal face: loops on ellipses in their topological order, the rest scattered."""
  xy = np.full((N, 2), np.nan)
  for centre, loop, start, direction in EYES:  # outer corner first, lower lid, inner corner, upper lid
    xy[loop] = _ellipse(centre, EYE_RADII, start + direction * 2 * np.pi * np.arange(16) / 16)
  lip_angles = np.pi + 2 * np.pi * np.arange(20) / 20  # right corner, lower lip, left corner, upper lip
  xy[topology.INNER_LIPS_LOOP] = _ellipse(MOUTH_CENTRE, INNER_LIP_RADII, lip_angles)
  xy[topology.OUTER_LIPS_LOOP] = _ellipse(MOUTH_CENTRE, OUTER_LIP_RADII, lip_angles)
  xy[topology.FACE_OVAL_LOOP] = _ellipse((0.0, 0.0), OVAL_RADII, np.pi / 2 - 2 * np.pi * np.arange(36) / 36)
  free = np.flatnonzero(np.isnan(xy[:, 0]))
  placed = list(xy[~np.isnan(xy[:, 0])])
  for index in free:
    while True:
      point = rng.uniform(-1.0, 1.0, size=2) * OVAL_RADII
      candidate = point[None]
      if (_inside_ellipse(candidate, (0.0, 0.0), OVAL_RADII, 0.93)[0]
          and not any(_inside_ellipse(candidate, c, EYE_RADII, 1.5)[0] for c, *_ in EYES)
          and not _inside_ellipse(candidate, MOUTH_CENTRE, OUTER_LIP_RADII, 1.2)[0]
          and np.min(np.linalg.norm(np.array(placed) - point, axis=1)) > 0.03):
        break
    xy[index] = point
    placed.append(point)
  z = 0.6 * np.sqrt(np.clip(1 - np.square(xy[:, 0] / OVAL_RADII[0]) - np.square(xy[:, 1] / OVAL_RADII[1]), 0, None))
  return np.concatenate([xy, z[:, None]], axis=1)


def _directions(mean, count, rng):
  """[N * 3, count] orthonormal directions orthogonal to the similarity motions of `mean`."""
  centred = mean - mean.mean(axis=0)
  motions = [np.tile(np.eye(3)[i], (N, 1)) for i in range(3)] + [np.cross(np.eye(3)[i], centred) for i in range(3)]
  motions = np.linalg.qr(np.stack([m.reshape(-1) for m in motions + [centred]], axis=1))[0]
  random = rng.normal(size=(3 * N, count))
  return np.linalg.qr(random - motions @ (motions.T @ random))[0]


@pytest.fixture(scope="module")
def truth():
  rng = np.random.default_rng(0)
  mean = _synthetic_face(rng)
  directions = _directions(mean, len(ID_STDS) + len(EXP_STDS), rng)
  return {"mean": mean, "id": directions[:, :len(ID_STDS)] * ID_STDS, "exp": directions[:, len(ID_STDS):] * EXP_STDS}


def _frames(truth, rng, neutral, expressive, noise=1e-3):
  """One person's clip [T, 468, 3] in screen space, and its model-space shapes before the camera."""
  a_id = rng.normal(size=len(ID_STDS))
  a_exp = np.concatenate([np.zeros((neutral, len(EXP_STDS))), rng.normal(size=(expressive, len(EXP_STDS)))])
  shapes = (truth["mean"].reshape(-1) + truth["id"] @ a_id + a_exp @ truth["exp"].T).reshape(-1, N, 3)
  rotation = Rotation.from_euler("xyz", rng.uniform(-0.4, 0.4, size=(len(shapes), 3))).as_matrix()
  scale = rng.uniform(60.0, 140.0, size=len(shapes))
  moved = scale[:, None, None] * np.einsum("tij,tnj->tni", rotation, shapes) + rng.uniform(50, 200, size=(len(shapes), 1, 3))
  moved += noise * scale[:, None, None] * rng.normal(size=moved.shape)
  return moved * [1.0, -1.0, 1.0], shapes


@pytest.fixture(scope="module")
def learned(truth):
  rng = np.random.default_rng(1)
  clips = [_frames(truth, rng, NEUTRAL_FRAMES, EXPRESSIVE_FRAMES)[0] for _ in range(CLIPS)]
  return learn_model.learn_face_model(clips, num_id=len(ID_STDS), num_exp=len(EXP_STDS))


def _rotate_basis(basis, rotation):
  return np.einsum("ij,njk->nik", rotation, basis.reshape(N, 3, -1)).reshape(3 * N, -1)


def test_model_is_valid_and_saves(learned, tmp_path):
  assert (learned.num_vertices, learned.num_id, learned.num_exp) == (N, len(ID_STDS), len(EXP_STDS))
  assert learned.name == "learned_facemesh468" and "Apache-2.0" in learned.licence
  np.testing.assert_array_equal(np.asarray(learned.landmarks), topology.IBUG68_FROM_MESH)
  face3d.save(learned, tmp_path / "learned.npz")
  assert face3d.content_hash(face3d.load(tmp_path / "learned.npz")) == face3d.content_hash(learned)


def test_frame_is_frontal_centred_and_sized(learned):
  mean = np.asarray(learned.mean, np.float64)
  eyes = mean[topology.LEFT_EYE_OUTER] - mean[topology.RIGHT_EYE_OUTER]
  assert np.linalg.norm(eyes) == pytest.approx(learn_model.OUTER_EYE_CORNER_DISTANCE, rel=1e-5)
  assert abs(eyes[1]) < 1e-5 and abs(eyes[2]) < 1e-5
  np.testing.assert_allclose(mean.mean(axis=0), 0.0, atol=1e-5)
  assert mean[10, 1] > mean[152, 1] and mean[topology.NOSE_TIP, 2] > mean[topology.RIGHT_EYE_OUTER, 2]


def test_outer_eye_corner_distance_matches_the_procedural_model():
  model = face3d.procedural_model(detail="low")
  mean, lmk = np.asarray(model.mean), np.asarray(model.landmarks)
  assert np.linalg.norm(mean[lmk[45]] - mean[lmk[36]]) == pytest.approx(learn_model.OUTER_EYE_CORNER_DISTANCE, rel=0.02)


def test_subspaces_match_the_true_ones(learned, truth):
  """Principal angles between learned and true axes, the truth turned into the learned frame."""
  _, rotation, _ = fit_similarity(truth["mean"], np.asarray(learned.mean, np.float64))
  for key, basis in (("id", learned.id_basis), ("exp", learned.exp_basis)):
    angles = np.degrees(linalg.subspace_angles(np.asarray(basis, np.float64).reshape(3 * N, -1),
                                               _rotate_basis(truth[key], rotation)))
    assert angles.max() < 3.0, (key, angles)


def test_held_out_frames_are_reproduced(learned, truth):
  """A new person's frames, fitted by alternating Procrustes and least squares on the coefficients."""
  rng = np.random.default_rng(2)
  screen, _ = _frames(truth, rng, 0, 12, noise=0.0)
  mean = np.asarray(learned.mean, np.float64).reshape(-1)
  bases = np.concatenate([np.asarray(learned.id_basis).reshape(3 * N, -1), np.asarray(learned.exp_basis).reshape(3 * N, -1)], 1)
  errors, mean_only = [], []
  for frame in learn_model.to_model_space(screen):
    fitted = mean
    for _ in range(10):
      aligned = learn_model._apply_similarity(frame, *fit_similarity(frame, fitted.reshape(N, 3))).reshape(-1)
      fitted = mean + bases @ np.linalg.lstsq(bases, aligned - mean, rcond=None)[0]
    errors.append(np.sqrt(np.square(aligned - fitted).reshape(N, 3).sum(1).mean()))
    to_mean = learn_model._apply_similarity(frame, *fit_similarity(frame, mean.reshape(N, 3))).reshape(-1)
    mean_only.append(np.sqrt(np.square(to_mean - mean).reshape(N, 3).sum(1).mean()))
  # Root-mean-square point error, as a fraction of the outer eye corners' distance.
  assert np.max(errors) / learn_model.OUTER_EYE_CORNER_DISTANCE < 0.01
  assert np.min(mean_only) > 5 * np.max(errors)


def test_generalized_procrustes_aligns_copies_exactly_and_is_stationary():
  rng = np.random.default_rng(3)
  base = rng.normal(size=(50, 3))
  rotation = Rotation.from_rotvec(rng.normal(size=(6, 3))).as_matrix()
  copies = rng.uniform(0.5, 2, size=(6, 1, 1)) * np.einsum("tij,nj->tni", rotation, base) + rng.normal(size=(6, 1, 3))
  aligned, reference = learn_model.generalized_procrustes(copies)
  np.testing.assert_allclose(aligned, np.broadcast_to(reference, aligned.shape), atol=1e-9)
  noisy = copies + 0.05 * rng.normal(size=copies.shape)
  aligned, reference = learn_model.generalized_procrustes(noisy)
  np.testing.assert_allclose(reference.mean(0), 0.0, atol=1e-12)
  assert np.sqrt(np.square(reference).sum(1).mean()) == pytest.approx(1.0)
  mean = aligned.mean(0)
  np.testing.assert_allclose(reference, (mean - mean.mean(0)) / np.sqrt(np.square(mean - mean.mean(0)).sum(1).mean()), atol=1e-8)
  # Brute force: no similarity found by a general optimiser brings a shape closer to the reference.
  for shape, ours in zip(noisy[:2], aligned[:2]):
    def residual(p, shape=shape):
      return (np.exp(p[3]) * shape @ Rotation.from_rotvec(p[:3]).as_matrix().T + p[4:] - reference).reshape(-1)
    best = min(np.square(least_squares(residual, np.concatenate([start, [0.0, 0, 0, 0]])).fun).sum()
               for start in rng.normal(size=(8, 3)) * 2)
    assert np.square(ours - reference).sum() == pytest.approx(best, rel=1e-7)


def test_tangent_projection_undoes_the_procrustes_shrinking():
  rng = np.random.default_rng(6)
  reference = rng.normal(size=(30, 3))
  reference -= reference.mean(0)
  deviation = rng.normal(size=(30, 3))
  deviation -= deviation.mean(0)
  deviation -= (deviation * reference).sum() / np.square(reference).sum() * reference
  shapes = np.stack([0.8 * (reference + deviation), 1.3 * (reference - 2 * deviation)])
  np.testing.assert_allclose(learn_model.tangent_projection(shapes, reference),
                             [reference + deviation, reference - 2 * deviation], atol=1e-12)


def test_principal_axes_against_the_covariance_eigendecomposition():
  rng = np.random.default_rng(4)
  samples = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
  deviations = samples - samples.mean(0)
  axes = learn_model.principal_axes(deviations, 3, 39)
  eigenvalues, eigenvectors = np.linalg.eigh(np.cov(samples, rowvar=False))
  expected = eigenvectors[:, ::-1][:, :3] * np.sqrt(eigenvalues[::-1][:3])
  np.testing.assert_allclose(np.abs(axes), np.abs(expected), atol=1e-10)
  assert learn_model.principal_axes(deviations[:2], 4, 1)[:, 2:].max() == 0.0


def test_canonical_frame_undoes_a_rotation(truth):
  rotation = Rotation.from_euler("xyz", [0.3, -0.5, 0.2]).as_matrix()
  scale, recovered, translation = learn_model.canonical_frame(2.5 * truth["mean"] @ rotation.T + 7.0)
  np.testing.assert_allclose(recovered @ rotation, np.eye(3), atol=1e-12)
  eyes = truth["mean"][topology.LEFT_EYE_OUTER] - truth["mean"][topology.RIGHT_EYE_OUTER]
  assert scale * 2.5 * np.linalg.norm(eyes) == pytest.approx(learn_model.OUTER_EYE_CORNER_DISTANCE)


def _winding_number(points, polygon):
  """Brute force: the total angle the polygon turns around each point, in turns."""
  d = polygon[None, :, :] - points[:, None, :]
  angles = np.arctan2(d[..., 1], d[..., 0])
  steps = np.diff(np.concatenate([angles, angles[:, :1]], axis=1), axis=1)
  return np.round(((steps + np.pi) % (2 * np.pi) - np.pi).sum(axis=1) / (2 * np.pi)).astype(int)


def test_points_in_polygon_against_winding_number():
  rng = np.random.default_rng(5)
  concave = np.array([[0, 0], [4, 0], [4, 3], [2, 1], [0, 3]], float)  # a V-shaped notch from the top
  points = rng.uniform(-0.5, 4.5, size=(2000, 2))
  np.testing.assert_array_equal(learn_model.points_in_polygon(points, concave), _winding_number(points, concave) != 0)
  assert learn_model.points_in_polygon([[2, 0.5], [2, 2], [0.5, 2]], concave).tolist() == [True, False, True]


def test_triangles_leave_holes_are_counter_clockwise_and_use_every_vertex(learned):
  mean, triangles = np.asarray(learned.mean, np.float64), np.asarray(learned.triangles)
  xy = mean[:, :2]
  (ax, ay), (bx, by), (cx, cy) = (xy[triangles[:, i]].T for i in range(3))
  assert np.all((bx - ax) * (cy - ay) - (by - ay) * (cx - ax) > 0)
  assert np.array_equal(np.unique(triangles), np.arange(N))
  centroids = xy[triangles].mean(1)
  for loop in (topology.RIGHT_EYE_LOOP, topology.LEFT_EYE_LOOP, topology.INNER_LIPS_LOOP):
    assert not np.any(_winding_number(centroids, xy[loop]))
  assert np.all(_winding_number(centroids, xy[topology.FACE_OVAL_LOOP]) != 0)


def test_rendered_face_covers_pixels_with_an_open_mouth_hole(learned):
  camera = face3d.Camera.from_vector(np.array([0.0, 0.0, 0.0, 20.0, 32.0, 32.0], np.float32))
  screen = np.asarray(face3d.project(learned.mean, camera))
  mask = np.asarray(render.rasterize(screen, learned.triangles, 64, 64).mask)
  assert 0.25 < mask.mean() < 0.8
  mouth = screen[topology.INNER_LIPS_LOOP, :2].mean(0)
  cheek = 0.5 * (screen[topology.RIGHT_EYE_OUTER, :2] + screen[topology.INNER_LIPS_LOOP[0], :2])
  assert not mask[int(mouth[1]), int(mouth[0])] and mask[int(cheek[1]), int(cheek[0])]
  for loop in (topology.RIGHT_EYE_LOOP, topology.LEFT_EYE_LOOP):
    centre = screen[loop, :2].mean(0)
    assert not mask[int(centre[1]), int(centre[0])]


@pytest.mark.parametrize("clips, problem", [
    ([np.zeros((3, N, 3))], "at least 2 clips"),
    (np.zeros((2, 3, N, 3)), "got one array"),
    ([np.zeros((3, N, 3)), np.zeros((3, 478, 3))], r"clip 1: must be \[T >= 1, 468, 3\].*got \[3, 478, 3\]"),
    ([np.zeros((0, N, 3)), np.zeros((3, N, 3))], r"clip 0: must be .*got \[0, 468, 3\]"),
    ([np.zeros((3, N, 3)), np.zeros((3, N, 3)), np.full((2, N, 3), np.nan)], "clip 2: contains NaN"),
])
def test_bad_clips_are_named(clips, problem):
  with pytest.raises(ValueError, match=problem):
    learn_model.learn_face_model(clips)


def test_bad_sizes():
  with pytest.raises(ValueError, match="num_id and num_exp must be at least 1"):
    learn_model.learn_face_model([np.zeros((1, N, 3))] * 2, num_exp=0)
