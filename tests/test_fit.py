"""prep.fit: per-clip 3DMM fitting, checked term by term against NumPy and end to end on synthetic
clips with known coefficients and cameras."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import rotation_numpy
from tfvgan_jax import face3d
from tfvgan_jax.data import synthetic
from tfvgan_jax.prep import fit

SIZE = 256


@functools.lru_cache(maxsize=None)
def model():
  return face3d.load_model("procedural:low")


@functools.lru_cache(maxsize=None)
def clip(seed, num_frames, dense=False, noise=0.0):
  """(truth, vertex ids, true points [T, L, 2], observed points) of a synthetic clip at 256 px."""
  m = model()
  truth = synthetic.sample_video(m, seed, num_frames, SIZE)
  ids = np.arange(m.num_vertices) if dense else np.asarray(m.landmarks)
  verts = face3d.vertices(m, truth.id_coeffs, truth.exp_coeffs)[:, ids]
  points = np.asarray(face3d.project(verts, face3d.Camera.from_vector(truth.cameras)))[..., :2]
  observed = points + noise * np.random.default_rng(seed).normal(size=points.shape)
  return truth, ids, points, observed


def project_numpy(shape, camera):
  """[L, 2] screen points of one frame: s * (x, -y) of R v, plus t."""
  rotated = np.asarray(shape, np.float64) @ rotation_numpy(camera[:3]).T
  return camera[3] * rotated[:, :2] * np.array([1.0, -1.0]) + camera[4:6]


def correlation(a, b):
  return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def max_pose_error_deg(cameras, truth_cameras):
  return float(np.degrees(np.max(np.abs(np.asarray(cameras)[:, :3] - truth_cameras[:, :3]))))


def reprojection_error(result, ids, points):
  """[T] mean distance in pixels between the fitted model's points and the true points."""
  m = model()
  verts = face3d.vertices(m, result.id_coeffs, result.exp_coeffs)[:, ids]
  fitted = np.asarray(face3d.project(verts, face3d.Camera.from_vector(result.cameras)))[..., :2]
  return np.linalg.norm(fitted - points, axis=-1).mean(axis=1)


def small_problem(seed=0, num_frames=5, num_points=9, real_frames=4, valid=None):
  """A random normalised ClipProblem on a few model vertices, with its true unknowns."""
  rng = np.random.default_rng(seed)
  m = model()
  ids = rng.choice(m.num_vertices, num_points, replace=False)
  basis = fit.LandmarkBasis(*(jnp.asarray(np.asarray(a)[ids]) for a in (m.mean, m.id_basis, m.exp_basis)))
  id_coeffs = rng.normal(size=m.num_id).astype(np.float32)
  exp_coeffs = rng.normal(size=(num_frames, m.num_exp)).astype(np.float32)
  cameras = np.concatenate([rng.uniform(-0.3, 0.3, (num_frames, 3)), rng.uniform(0.4, 0.6, (num_frames, 1)),
                            rng.uniform(-0.1, 0.1, (num_frames, 2))], axis=1).astype(np.float32)
  real = (np.arange(num_frames) < real_frames).astype(np.float32)
  problem = fit.ClipProblem(
      basis=basis,
      points=fit.reproject(basis, jnp.asarray(id_coeffs), jnp.asarray(exp_coeffs), jnp.asarray(cameras)),
      valid=jnp.asarray(real if valid is None else valid * real, jnp.float32),
      real=jnp.asarray(real),
      point_weights=jnp.asarray(rng.uniform(0.5, 1.5, num_points), jnp.float32),
  )
  return problem, id_coeffs, np.concatenate([exp_coeffs, cameras], axis=1)


def dense_system(system):
  """The full symmetric matrix and right-hand side of a ClipSystem, assembled in NumPy."""
  blocks = np.asarray(system.frame_blocks, np.float64)
  num_frames, num_params, _ = blocks.shape
  num_id = system.id_block.shape[0]
  n = num_frames * num_params
  matrix = np.zeros((n + num_id, n + num_id))
  for t in range(num_frames):
    span = slice(t * num_params, (t + 1) * num_params)
    matrix[span, span] = blocks[t]
    matrix[span, n:] = np.asarray(system.cross[t])
    matrix[n:, span] = np.asarray(system.cross[t]).T
    if t + 1 < num_frames:
      following = slice((t + 1) * num_params, (t + 2) * num_params)
      matrix[span, following] = -np.diag(np.asarray(system.couplings[t]))
      matrix[following, span] = -np.diag(np.asarray(system.couplings[t]))
  matrix[n:, n:] = np.asarray(system.id_block)
  rhs = np.concatenate([np.asarray(system.frame_rhs).ravel(), np.asarray(system.id_rhs)])
  return matrix, rhs


# ---------------------------------------------------------------------------------------------
# Each term against NumPy.


def test_data_term_matches_numpy_loop():
  rng = np.random.default_rng(0)
  residuals = rng.normal(0, 0.05, size=(4, 6, 2))
  residuals[1, 2] = [0.4, -0.3]  # a gross outlier, deep in the Cauchy tail
  mask = np.array([1.0, 1.0, 0.0, 1.0])
  weights = rng.uniform(0, 2, size=6)
  noise, scale = 0.01, 0.03
  want = 0.0
  for t in range(4):
    for l in range(6):
      squared = residuals[t, l, 0] ** 2 + residuals[t, l, 1] ** 2
      want += mask[t] * weights[l] * scale ** 2 * np.log(1 + squared / scale ** 2) / (2 * noise ** 2)
  got = fit.data_term(jnp.asarray(residuals, jnp.float32), jnp.asarray(mask, jnp.float32),
                      jnp.asarray(weights, jnp.float32), noise, scale)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  # Small errors: the Gaussian negative log-likelihood |r|^2 / (2 sigma^2).
  tiny = 1e-3 * np.ones((1, 1, 2))
  np.testing.assert_allclose(float(fit.data_term(jnp.asarray(tiny, jnp.float32), jnp.ones(1), jnp.ones(1), noise, scale)),
                             2e-6 / (2 * noise ** 2), rtol=3e-3)


def test_cauchy_weight_is_the_loss_derivative_over_r():
  r = np.linspace(0.0, 0.5, 11)
  c = 0.03
  rho = lambda x: c ** 2 / 2 * np.log1p(x ** 2 / c ** 2)
  derivative = (rho(r + 1e-6) - rho(r - 1e-6)) / 2e-6
  residuals = np.stack([r, np.zeros_like(r)], -1)
  np.testing.assert_allclose(np.asarray(fit.cauchy_weight(jnp.asarray(residuals), c))[1:] * r[1:], derivative[1:],
                             rtol=1e-4)


def test_prior_term_matches_numpy():
  rng = np.random.default_rng(1)
  id_coeffs, exp_coeffs = rng.normal(size=5), rng.normal(size=(4, 3))
  real = np.array([1.0, 1.0, 1.0, 0.0])
  want = 0.5 * 2.0 * sum(a * a for a in id_coeffs) + 0.5 * 0.3 * sum(
      real[t] * exp_coeffs[t, k] ** 2 for t in range(4) for k in range(3))
  got = fit.prior_term(jnp.asarray(id_coeffs), jnp.asarray(exp_coeffs), jnp.asarray(real), 2.0, 0.3)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_smoothness_term_matches_numpy_and_skips_padding():
  rng = np.random.default_rng(2)
  params = rng.normal(size=(6, 4))
  real = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
  weights = np.array([1.0, 4.0, 0.5, 2.0])
  want = 0.0
  for t in range(3):  # pairs (0,1), (1,2), (2,3): none touches the padded frames 4 and 5
    for j in range(4):
      want += 0.5 * weights[j] * (params[t + 1, j] - params[t, j]) ** 2
  got = fit.smoothness_term(jnp.asarray(params), jnp.asarray(real), jnp.asarray(weights))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  moved = params.copy()
  moved[4:] += 100.0
  np.testing.assert_allclose(float(fit.smoothness_term(jnp.asarray(moved), jnp.asarray(real), jnp.asarray(weights))),
                             want, rtol=1e-5)


def test_objective_matches_numpy_reprojection():
  problem, id_coeffs, frame_params = small_problem(seed=3)
  rng = np.random.default_rng(3)
  frame_params = frame_params + rng.normal(0, 0.02, frame_params.shape)
  id_coeffs = id_coeffs + rng.normal(0, 0.1, id_coeffs.shape)
  config = fit.FitConfig()
  basis = [np.asarray(a, np.float64) for a in problem.basis]
  num_exp = basis[2].shape[-1]
  step_weights = np.asarray(config.step_weights(num_exp), np.float64)
  real, valid = np.asarray(problem.real), np.asarray(problem.valid)
  weights = np.asarray(problem.point_weights)
  want = 0.5 * config.id_prior * np.sum(id_coeffs.astype(np.float64) ** 2)
  for t in range(frame_params.shape[0]):
    shape = basis[0] + basis[1] @ id_coeffs + basis[2] @ frame_params[t, :num_exp]
    errors = project_numpy(shape, frame_params[t, num_exp:]) - np.asarray(problem.points[t])
    c2 = config.robust_scale ** 2
    want += valid[t] * np.sum(weights * c2 * np.log1p(np.sum(errors ** 2, -1) / c2)) / (2 * config.landmark_noise ** 2)
    want += 0.5 * config.exp_prior * real[t] * np.sum(frame_params[t, :num_exp] ** 2)
    if t + 1 < frame_params.shape[0]:
      want += 0.5 * real[t] * real[t + 1] * np.sum(step_weights * (frame_params[t + 1] - frame_params[t]) ** 2)
  got = fit.objective(jnp.asarray(id_coeffs), jnp.asarray(frame_params, jnp.float32), problem, config)
  np.testing.assert_allclose(float(got), want, rtol=2e-4)


# ---------------------------------------------------------------------------------------------
# Gauss-Newton system and its structured solver.


def test_normal_equations_are_the_gradient_and_exact_hessian_at_a_perfect_fit():
  """b = -grad E anywhere (IRLS weights give the Cauchy gradient); H = hess E where r = 0."""
  problem, id_coeffs, frame_params = small_problem(seed=4, valid=np.array([1, 0, 1, 1, 1]))
  config = fit.FitConfig()
  energy = jax.jit(lambda i, q: fit.objective(i, q, problem, config))
  system = jax.jit(lambda i, q: fit.normal_equations(i, q, problem, config))
  real = np.asarray(problem.real) > 0

  # Gradient away from the optimum (with some errors far in the Cauchy tail).
  rng = np.random.default_rng(4)
  moved_id = jnp.asarray(id_coeffs + rng.normal(0, 0.2, id_coeffs.shape), jnp.float32)
  moved = jnp.asarray(frame_params + rng.normal(0, 0.05, frame_params.shape), jnp.float32)
  grad_id, grad_frames = jax.grad(energy, argnums=(0, 1))(moved_id, moved)
  got = system(moved_id, moved)
  np.testing.assert_allclose(np.asarray(got.id_rhs), -np.asarray(grad_id), rtol=2e-3, atol=2e-2)
  np.testing.assert_allclose(np.asarray(got.frame_rhs)[real], -np.asarray(grad_frames)[real], rtol=2e-3, atol=2e-2)

  # Hessian at the exact fit, real frames only (padded ones are frozen, H = I there).
  at_fit = system(jnp.asarray(id_coeffs), jnp.asarray(frame_params, jnp.float32))
  matrix, _ = dense_system(at_fit)
  flat = lambda v: energy(v[-id_coeffs.size:], v[:-id_coeffs.size].reshape(frame_params.shape))
  start = jnp.concatenate([jnp.asarray(frame_params, jnp.float32).ravel(), jnp.asarray(id_coeffs)])
  hessian = np.asarray(jax.jit(jax.hessian(flat))(start), np.float64)
  keep = np.concatenate([np.repeat(real, frame_params.shape[1]), np.ones(id_coeffs.size, bool)])
  np.testing.assert_allclose(matrix[np.ix_(keep, keep)], hessian[np.ix_(keep, keep)], rtol=2e-3,
                             atol=2e-3 * np.abs(hessian).max())


def test_solve_clip_system_matches_dense_solve():
  rng = np.random.default_rng(5)
  num_frames, num_params, num_id = 6, 4, 3
  blocks = []
  for _ in range(num_frames):
    a = rng.normal(size=(num_params, num_params))
    blocks.append(a @ a.T + 8 * np.eye(num_params))
  system = fit.ClipSystem(
      frame_blocks=jnp.asarray(np.stack(blocks), jnp.float32),
      couplings=jnp.asarray(rng.uniform(0, 2, (num_frames, num_params)), jnp.float32),
      cross=jnp.asarray(rng.normal(0, 0.5, (num_frames, num_params, num_id)), jnp.float32),
      id_block=jnp.asarray(20 * np.eye(num_id) + 0.1, jnp.float32),
      frame_rhs=jnp.asarray(rng.normal(size=(num_frames, num_params)), jnp.float32),
      id_rhs=jnp.asarray(rng.normal(size=num_id), jnp.float32),
  )
  matrix, rhs = dense_system(system)
  want = np.linalg.solve(matrix, rhs)
  frames, identity = fit.solve_clip_system(system)
  np.testing.assert_allclose(np.asarray(frames).ravel(), want[:-num_id], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(identity), want[-num_id:], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Initialisation.


def test_closed_form_cameras_recover_an_exact_weak_perspective_projection():
  m = model()
  shape = np.asarray(m.mean)[np.asarray(m.landmarks)]
  rng = np.random.default_rng(6)
  cameras = np.concatenate([rng.uniform(-0.5, 0.5, (8, 3)), rng.uniform(40, 90, (8, 1)), rng.uniform(80, 180, (8, 2))], 1)
  points = np.stack([project_numpy(shape, c) for c in cameras])
  got = np.asarray(fit.closed_form_cameras(jnp.asarray(shape), jnp.asarray(points, jnp.float32), jnp.ones((8, 68))))
  np.testing.assert_allclose(got[:, :3], cameras[:, :3], atol=2e-4)
  np.testing.assert_allclose(got[:, 3], cameras[:, 3], rtol=1e-4)
  np.testing.assert_allclose(got[:, 4:], cameras[:, 4:], atol=5e-3)
  # A proper rotation with the face (model +z) toward the camera.
  rotation = np.asarray(face3d.euler_to_matrix(got[:, :3]))
  np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-5)
  assert np.all(rotation[:, 2, 2] > 0)


def test_interpolate_missing_is_linear_between_valid_frames_and_constant_beyond():
  values = jnp.asarray([[0.0], [9.0], [9.0], [3.0], [9.0], [6.0], [9.0]])
  valid = jnp.asarray([False, True, False, True, False, True, False]) | jnp.asarray([True] + [False] * 6)
  got = np.asarray(fit.interpolate_missing(values, valid))[:, 0]
  np.testing.assert_allclose(got, [0.0, 9.0, 6.0, 3.0, 4.5, 6.0, 6.0])
  leading = np.asarray(fit.interpolate_missing(jnp.asarray([[1.0], [2.0], [5.0]]), jnp.asarray([False, False, True])))
  np.testing.assert_allclose(leading[:, 0], [5.0, 5.0, 5.0])


# ---------------------------------------------------------------------------------------------
# The reported helpers.


def test_interocular_distance_hand_case():
  points = np.zeros((2, 68, 2))
  points[:, 36] = [10.0, 20.0]
  points[0, 45] = [13.0, 24.0]
  points[1, 45] = [10.0, 120.0]
  np.testing.assert_allclose(fit.interocular_distance(points), [5.0, 100.0])
  with pytest.raises(ValueError, match="68, 2"):
    fit.interocular_distance(np.zeros((5, 2)))


def test_pose_jitter_hand_cases():
  frames = np.arange(12)
  cameras = np.zeros((12, 6))
  cameras[:, 1] = np.radians(0.5 * frames)  # steady yaw: no jitter
  np.testing.assert_allclose(fit.pose_jitter(cameras), 0.0, atol=1e-9)
  # +-a on alternate frames over the ramp: a 3-frame mean of (-a, a, -a) is -a/3, so every
  # detrended frame is off by 4a/3.
  cameras[:, 1] += np.radians(3.0 * (-1.0) ** frames)
  np.testing.assert_allclose(fit.pose_jitter(cameras, window=3), [0.0, 4.0, 0.0], atol=1e-9)
  assert np.all(np.isnan(fit.pose_jitter(cameras[:4], window=5)))
  with pytest.raises(ValueError, match="odd"):
    fit.pose_jitter(cameras, window=4)


def test_bucket_size():
  assert [fit.bucket_size(n) for n in (1, 16, 17, 100, 128, 129)] == [16, 16, 32, 128, 128, 256]
  assert fit.bucket_size(5, min_bucket=4) == 8


# ---------------------------------------------------------------------------------------------
# End to end on synthetic clips (the low-detail procedural model; same landmarks at any detail).


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_fit_recovers_pose_and_landmarks_of_synthetic_clips(noise):
  """68 landmarks at 256 px: pose within 2 degrees and landmarks within 1 px on every frame;
  expression correlated >= 0.85 and identity >= 0.8 with the truth (68 points leave some identity
  axes, e.g. overall face size against camera scale, to the prior; measured 0.82-0.96)."""
  m = model()
  for seed in range(4):
    truth, ids, points, observed = clip(seed, 32, noise=noise)
    result = fit.fit_clip(m, observed)
    assert result.id_coeffs.shape == (m.num_id,)  # one identity for the whole clip
    assert result.exp_coeffs.shape == (32, m.num_exp) and result.cameras.shape == (32, 6)
    assert max_pose_error_deg(result.cameras, truth.cameras) < 2.0
    assert reprojection_error(result, ids, points).max() < 1.0
    assert correlation(result.exp_coeffs, truth.exp_coeffs) >= 0.85
    assert correlation(result.id_coeffs, truth.id_coeffs) >= 0.8
    np.testing.assert_allclose(result.residual, reprojection_error(result, ids, observed), rtol=1e-3, atol=1e-3)


def test_fit_with_dense_points_recovers_identity_and_expression():
  """All vertices as landmarks (as a 468-point topology is fitted): coefficients correlate >= 0.9."""
  m = model()
  for seed in range(3):
    truth, ids, points, observed = clip(seed, 32, dense=True, noise=0.5)
    result = fit.fit_clip(m, observed, vertex_ids=ids)
    assert correlation(result.id_coeffs, truth.id_coeffs) >= 0.9
    assert correlation(result.exp_coeffs, truth.exp_coeffs) >= 0.95
    assert max_pose_error_deg(result.cameras, truth.cameras) < 1.0
    assert reprojection_error(result, ids, points).max() < 0.5


def test_gross_outliers_do_not_move_the_pose():
  m = model()
  truth, ids, points, observed = clip(1, 32, noise=0.5)
  rng = np.random.default_rng(7)
  corrupted = observed.copy()
  frames = [3, 10, 11, 20, 30]
  for t in frames:
    which = rng.choice(68, 4, replace=False)
    angle = rng.uniform(0, 2 * np.pi, 4)
    corrupted[t, which] += 30.0 * np.stack([np.cos(angle), np.sin(angle)], -1)
  result = fit.fit_clip(m, corrupted)
  assert max_pose_error_deg(result.cameras, truth.cameras) < 2.0
  assert reprojection_error(result, ids, points).max() < 1.0


def test_invalid_frames_get_interpolated_coefficients_and_nan_residual():
  m = model()
  truth, ids, points, observed = clip(2, 32, noise=0.5)
  valid = np.ones(32, bool)
  valid[[0, 14, 15, 16, 31]] = False
  observed = np.where(valid[:, None, None], observed, np.nan)
  result = fit.fit_clip(m, observed)  # `valid` defaults to the frames with finite points
  np.testing.assert_array_equal(np.isnan(result.residual), ~valid)
  assert np.all(np.isfinite(result.exp_coeffs)) and np.all(np.isfinite(result.cameras))
  # Short gaps of a smooth head motion: interpolated poses stay close to the truth.
  assert max_pose_error_deg(result.cameras, truth.cameras) < 3.0
  same = fit.fit_clip(m, np.nan_to_num(observed), valid=valid)
  np.testing.assert_allclose(same.cameras, result.cameras, rtol=1e-5, atol=1e-4)


def test_fit_does_not_depend_on_the_bucket():
  m = model()
  truth, ids, points, observed = clip(3, 20, noise=0.5)
  alone = fit.fit_clip(m, observed)  # bucket 32
  padded = fit.fit_clip(m, observed, config=fit.FitConfig(min_bucket=64))
  np.testing.assert_allclose(padded.id_coeffs, alone.id_coeffs, atol=2e-3)
  np.testing.assert_allclose(padded.exp_coeffs, alone.exp_coeffs, atol=2e-3)
  np.testing.assert_allclose(padded.cameras, alone.cameras, rtol=1e-4, atol=2e-3)
  np.testing.assert_allclose(padded.residual, alone.residual, atol=1e-3)


def test_fit_rejects_bad_input():
  m = model()
  points = np.zeros((4, 68, 2))
  with pytest.raises(ValueError, match="L = 68"):
    fit.fit_clip(m, np.zeros((4, 5, 2)))
  with pytest.raises(ValueError, match="no valid frame"):
    fit.fit_clip(m, points, valid=np.zeros(4, bool))
  points[1, 3] = np.nan
  with pytest.raises(ValueError, match=r"frames \[1\] are marked valid"):
    fit.fit_clip(m, points, valid=np.ones(4, bool))


def test_a_joined_track_is_fitted_across_its_gap():
  # A face drifting 4 px per frame, tracked in frames 0-19 and 40-59 (a joined track). Fitted with
  # the gap as frames without landmarks, the frames by the gap land near where a fit that saw every
  # frame puts them; fitted as if frame 40 followed frame 19, the smoothness term drags them along.
  from tfvgan_jax.prep import clip as clip_lib
  from tfvgan_jax.prep import crop, topology
  m = model()
  _, _, _, observed = clip(3, 60, noise=0.5)
  observed = observed + np.arange(60)[:, None, None] * np.array([4.0, 0.0])
  mesh = np.zeros((60, 468, 3), np.float32)
  mesh[..., :2] = observed[:, np.arange(468) % 68]
  mesh[:, topology.IBUG68_FROM_MESH, :2] = observed
  kept = np.r_[0:20, 40:60]
  joined = clip_lib.fit_track(clip_lib.FaceTrack(kept, mesh[kept], (512, 256), 25.0, 60, "joined"), m,
                              clip_lib.PrepSettings(image_size=SIZE))
  assert len(joined.fit.cameras) == 40 and np.all(joined.frames == kept)
  # Every frame in the joined track's crop pixels: the reference fit, and the gap ignored.
  every = crop.to_crop(mesh, joined.box, SIZE)[:, topology.IBUG68_FROM_MESH, :2]
  seen = fit.fit_clip(m, every)
  naive = fit.fit_clip(m, joined.landmarks)
  by_gap = [18, 19, 20, 21]
  gap_aware = np.abs(joined.fit.cameras[by_gap, 4:] - seen.cameras[kept[by_gap], 4:]).max()
  as_consecutive = np.abs(naive.cameras[by_gap, 4:] - seen.cameras[kept[by_gap], 4:]).max()
  assert gap_aware < 0.5 * as_consecutive
