"""Per-clip 3DMM fitting to 2D landmark tracks: one identity per clip, expression and camera per frame.

  result = fit_clip(model, points)      # points [T, L, 2] in image pixels, x right, y down
  result.id_coeffs [K_id], result.exp_coeffs [T, K_exp], result.cameras [T, 6], result.residual [T]

Cameras are face3d camera vectors [pitch, yaw, roll, scale, tx, ty] (`face3d.project`:
`screen_xy = s * flip_y(R @ v)[:2] + t`), coefficients are in units of the population std.

Units. Inside the fit every point is normalised by the clip's face size `f` (the median over valid
frames of sqrt(width * height) of the landmark box; about 1.4 x the inter-ocular distance for
iBUG-68) around the clip's median landmark centroid `o`: p' = (p - o) / f. A camera becomes
(pose, s / f, (t - o) / f), so every unknown is of order 1 and every setting of `FitConfig` below
is independent of the image resolution.

Objective (`objective`), with r_tl the normalised 2D reprojection error of point l in frame t,
q_t = [a_exp(t), pitch, yaw, roll, s', tx', ty'] the frame's unknowns and a_id the clip's identity:

  E = data + prior + smoothness
  data       = 1/(2 sigma^2) sum_{t valid} sum_l w_l c^2 log(1 + |r_tl|^2 / c^2)     (Cauchy)
  prior      = alpha_id/2 |a_id|^2 + alpha_exp/2 sum_{t real} |a_exp(t)|^2          (N(0, I))
  smoothness = 1/2 sum_{t, t+1 both real} sum_j (q_{t+1,j} - q_{t,j})^2 / tau_j^2

sigma is the landmark noise and c the Cauchy scale, both fractions of the face size; tau_j is the
expected frame-to-frame change of unknown j (a random-walk prior). With alpha = 1 the objective is a
MAP estimate under the model's own N(0, I) coefficient prior, but a joint MAP over one identity and
T expressions is biased: weak perspective cannot tell a small face near the camera from a large one
far away (identity axes such as face width and length against the camera scale), and the T
expression priors, which shrink as the scale grows, outweigh the single identity prior along that
direction (at alpha_exp = 1 and T = 128 the fitted scale drifts 10-20 % and identity correlation
falls to 0.6). alpha_exp therefore defaults to 0.01; expressions are well determined by the
landmarks without it. First differences pull on a frame
only through its acceleration, so steady motion is not damped; frames without landmarks (`valid`
false) keep their prior and smoothness terms and so are interpolated linearly between their
neighbours.

Optimiser (`fit_clip`), jitted, batched over frames:
  1. Closed-form camera per frame from the mean shape (`closed_form_cameras`): weighted least-squares
     affine 2x3, the nearest scaled rotation (SVD), Euler angles; reweighted with the Cauchy weights
     a few times so that gross outliers do not steer it. Frames without landmarks get cameras
     interpolated from their valid neighbours.
  2. Levenberg-Marquardt on E with Gauss-Newton normal equations from iteratively reweighted
     (Cauchy) Jacobians. The system has the structure of a clip: per-frame blocks [P, P]
     (P = K_exp + 6) coupled to their neighbours by the smoothness term (block tridiagonal) and to
     the shared identity. `solve_clip_system` solves it exactly: a block-tridiagonal elimination
     (a scan over frames) for the frame blocks, a Schur complement [K_id, K_id] for the identity.
     A step is kept when it lowers E (the damping shrinks), otherwise the damping grows.

Padding. T is padded to a bucket (the next power of two, at least `FitConfig.min_bucket`) with
frames that have no data, prior or smoothness term and whose unknowns are frozen, so clips of any
length share a few compilations and a clip's result does not depend on its bucket.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tfvgan_jax import face3d

# Screen y points down, model y up (face3d.camera): the projection flips the second row.
_FLIP = jnp.array([1.0, -1.0], jnp.float32)


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """Settings of `fit_clip`. Lengths are fractions of the face size (see the module docstring).

  Attributes:
    iterations: Levenberg-Marquardt iterations.
    init_iterations: Cauchy reweightings of the closed-form camera initialisation.
    landmark_noise: sigma, the std of a landmark's error (0.01: about 1.5 px on a 150 px face).
    robust_scale: c, the Cauchy scale; an error of c weighs half as much as a small one, an error
      of 10 c about 1/100 as much.
    id_prior, exp_prior: alpha_id, alpha_exp, multipliers of the N(0, I) coefficient priors
      (alpha_exp < 1 against the face-size bias described in the module docstring).
    exp_step: tau of each expression coefficient per frame (population std per frame).
    pose_step: tau of pitch, yaw and roll per frame (radians).
    scale_step: tau of the normalised scale s' per frame.
    translation_step: tau of the normalised translation per frame.
    min_bucket: the smallest padded clip length.
    initial_damping: the first Levenberg-Marquardt damping, relative to the diagonal.
  """

  iterations: int = 8
  init_iterations: int = 3
  landmark_noise: float = 0.01
  robust_scale: float = 0.03
  id_prior: float = 1.0
  exp_prior: float = 0.01
  exp_step: float = 1.0
  pose_step: float = 0.05
  scale_step: float = 0.01
  translation_step: float = 0.02
  min_bucket: int = 16
  initial_damping: float = 1e-3

  def step_weights(self, num_exp: int) -> jax.Array:
    """[K_exp + 6] smoothness weights 1 / tau_j^2 of the frame unknowns q_t."""
    taus = [self.exp_step] * num_exp + [self.pose_step] * 3 + [self.scale_step] + [self.translation_step] * 2
    return 1.0 / jnp.square(jnp.asarray(taus, jnp.float32))


class FitResult(NamedTuple):
  """A fitted clip of T frames.

  Attributes:
    id_coeffs: [K_id] float32, one identity for the whole clip.
    exp_coeffs: [T, K_exp] float32.
    cameras: [T, 6] float32 face3d camera vectors in the pixels of `points`.
    residual: [T] float32, the mean Euclidean reprojection error in pixels over the L points
      (unweighted, outliers included); NaN for frames without landmarks.
  """

  id_coeffs: np.ndarray
  exp_coeffs: np.ndarray
  cameras: np.ndarray
  residual: np.ndarray


class LandmarkBasis(NamedTuple):
  """The model restricted to the fitted vertices.

  Attributes:
    mean: [L, 3]; id_basis: [L, 3, K_id]; exp_basis: [L, 3, K_exp].
  """

  mean: jax.Array
  id_basis: jax.Array
  exp_basis: jax.Array


def landmark_basis(model: face3d.MorphableModel, vertex_ids) -> LandmarkBasis:
  """The model restricted to the vertices `vertex_ids` [L], float32."""
  return LandmarkBasis(*(jnp.asarray(np.asarray(a)[np.asarray(vertex_ids)], jnp.float32)
                         for a in (model.mean, model.id_basis, model.exp_basis)))


class ClipSystem(NamedTuple):
  """Gauss-Newton normal equations H x = b of a clip, in the clip's block structure.

  H = [[A, C], [C^T, H_id]] with A block tridiagonal: diagonal blocks `frame_blocks` and the block
  between frames t and t+1 equal to -diag(`couplings[t]`).

  Attributes:
    frame_blocks: [T, P, P]; couplings: [T, P] (the last row is unused); cross: [T, P, K_id];
    id_block: [K_id, K_id]; frame_rhs: [T, P]; id_rhs: [K_id].
  """

  frame_blocks: jax.Array
  couplings: jax.Array
  cross: jax.Array
  id_block: jax.Array
  frame_rhs: jax.Array
  id_rhs: jax.Array


# ---------------------------------------------------------------------------------------------
# Helpers the data-prep job reports.


def interocular_distance(points68) -> np.ndarray:
  """[...] distance in pixels between the outer eye corners (iBUG-68 points 36 and 45).

  Args:
    points68: [..., 68, 2] iBUG-68 landmarks.
  """
  points68 = np.asarray(points68, np.float64)
  if points68.shape[-2:] != (68, 2):
    raise ValueError(f"interocular_distance takes [..., 68, 2] iBUG-68 landmarks, got shape {points68.shape}")
  right, left = face3d.IBUG68_OUTER_EYE_CORNERS
  return np.linalg.norm(points68[..., left, :] - points68[..., right, :], axis=-1)


def pose_jitter(cameras, window: int = 5) -> np.ndarray:
  """[3] high-frequency pose noise of a clip in degrees: (pitch, yaw, roll).

  The trend is a centred moving average over `window` frames (0.2 s at 25 fps), which follows
  linear motion exactly and smooth motion closely; the jitter is the root mean square of the angle
  minus its trend over the frames where the whole window fits. NaN when the clip is shorter than the
  window.

  Args:
    cameras: [T, 6] camera vectors.
    window: odd number of frames of the moving average.
  """
  cameras = np.asarray(cameras, np.float64)
  if cameras.ndim != 2 or cameras.shape[1] != face3d.CAMERA_SIZE:
    raise ValueError(f"pose_jitter takes [T, {face3d.CAMERA_SIZE}] camera vectors, got shape {cameras.shape}")
  if window < 1 or window % 2 == 0:
    raise ValueError(f"pose_jitter: the window must be an odd number of frames, got {window}")
  if cameras.shape[0] < window:
    return np.full(3, np.nan)
  angles = np.degrees(cameras[:, :3])
  kernel = np.full(window, 1.0 / window)
  trend = np.stack([np.convolve(angles[:, k], kernel, mode="valid") for k in range(3)], axis=-1)
  half = window // 2
  detrended = angles[half:angles.shape[0] - half] - trend
  return np.sqrt(np.mean(np.square(detrended), axis=0))


# ---------------------------------------------------------------------------------------------
# The objective, one term per function.


def reproject(basis: LandmarkBasis, id_coeffs: jax.Array, exp_coeffs: jax.Array, cameras: jax.Array) -> jax.Array:
  """[T, L, 2] screen positions of the fitted vertices: s * flip_y(R S)[:2] + t (face3d.project).

  Args:
    basis: the model at the L vertices.
    id_coeffs: [K_id]; exp_coeffs: [T, K_exp]; cameras: [T, 6].
  """
  shape = basis.mean + jnp.einsum("lck,k->lc", basis.id_basis, id_coeffs) + jnp.einsum("lck,tk->tlc", basis.exp_basis, exp_coeffs)
  return face3d.project(shape, face3d.Camera.from_vector(cameras))[..., :2]


def cauchy_weight(residuals: jax.Array, robust_scale: float) -> jax.Array:
  """[...] IRLS weight 1 / (1 + |r|^2 / c^2) of the Cauchy loss rho(r) = c^2/2 log(1 + |r|^2/c^2).

  rho'(|r|) = weight * |r|, so weighted least squares with these weights has the Cauchy gradient.

  Args:
    residuals: [..., 2] 2D errors.
  """
  return 1.0 / (1.0 + jnp.sum(jnp.square(residuals), axis=-1) / robust_scale ** 2)


def data_term(residuals: jax.Array, frame_mask: jax.Array, point_weights: jax.Array, noise: float,
              robust_scale: float) -> jax.Array:
  """Robust (Cauchy) data term: 1/(2 sigma^2) sum_t m_t sum_l w_l c^2 log(1 + |r_tl|^2 / c^2).

  For |r| << c it is sum |r|^2 / (2 sigma^2), the Gaussian negative log-likelihood.

  Args:
    residuals: [T, L, 2] errors; frame_mask: [T] float m_t (1 for valid frames);
    point_weights: [L] w_l; noise: sigma; robust_scale: c.
  """
  c2 = robust_scale ** 2
  per_point = c2 * jnp.log1p(jnp.sum(jnp.square(residuals), axis=-1) / c2)
  return jnp.sum(frame_mask[:, None] * point_weights * per_point) / (2.0 * noise ** 2)


def prior_term(id_coeffs: jax.Array, exp_coeffs: jax.Array, real: jax.Array, id_prior: float,
               exp_prior: float) -> jax.Array:
  """Coefficient priors: alpha_id/2 |a_id|^2 + alpha_exp/2 sum_t real_t |a_exp(t)|^2.

  Args:
    id_coeffs: [K_id]; exp_coeffs: [T, K_exp]; real: [T] float, 0 for padded frames.
  """
  return 0.5 * id_prior * jnp.sum(jnp.square(id_coeffs)) + 0.5 * exp_prior * jnp.sum(real[:, None] * jnp.square(exp_coeffs))


def smoothness_term(frame_params: jax.Array, real: jax.Array, step_weights: jax.Array) -> jax.Array:
  """Temporal smoothness: 1/2 sum_t real_t real_{t+1} sum_j w_j (q_{t+1,j} - q_{t,j})^2.

  Args:
    frame_params: [T, P] per-frame unknowns q_t; real: [T] float, 0 for padded frames (no pair
      with a padded frame counts); step_weights: [P] w_j = 1 / tau_j^2.
  """
  pairs = real[1:] * real[:-1]
  return 0.5 * jnp.sum(pairs[:, None] * step_weights * jnp.square(jnp.diff(frame_params, axis=0)))


class ClipProblem(NamedTuple):
  """The normalised, padded data of one clip (`prepare_clip`).

  Attributes:
    basis: the model at the L fitted vertices.
    points: [T, L, 2] normalised landmarks (zero in frames without landmarks).
    valid: [T] float, 1 for real frames with landmarks.
    real: [T] float, 1 for the clip's frames, 0 for padding.
    point_weights: [L].
  """

  basis: LandmarkBasis
  points: jax.Array
  valid: jax.Array
  real: jax.Array
  point_weights: jax.Array


def objective(id_coeffs: jax.Array, frame_params: jax.Array, problem: ClipProblem, config: FitConfig) -> jax.Array:
  """E = data + prior + smoothness of a normalised clip (module docstring).

  Args:
    id_coeffs: [K_id]; frame_params: [T, K_exp + 6] q_t = [a_exp(t), normalised camera].
  """
  num_exp = problem.basis.exp_basis.shape[-1]
  exp_coeffs, cameras = frame_params[:, :num_exp], frame_params[:, num_exp:]
  residuals = reproject(problem.basis, id_coeffs, exp_coeffs, cameras) - problem.points
  return (data_term(residuals, problem.valid, problem.point_weights, config.landmark_noise, config.robust_scale)
          + prior_term(id_coeffs, exp_coeffs, problem.real, config.id_prior, config.exp_prior)
          + smoothness_term(frame_params, problem.real, config.step_weights(num_exp)))


# ---------------------------------------------------------------------------------------------
# Initialisation.


def closed_form_cameras(shape: jax.Array, points: jax.Array, weights: jax.Array) -> jax.Array:
  """[T, 6] weak-perspective cameras that best map `shape` onto `points`, in closed form.

  Per frame: the weighted least-squares affine map points ~ M shape + t (M [2, 3]); the nearest
  scaled rotation rows to flip_y(M) in the Frobenius norm, s Q with Q = U V^T and s the mean of
  the singular values of flip_y(M) = U diag(sv) V^T; the third row r3 = r1 x r2 (det R = +1: the
  other sign is a mirror image whose outward normal, model +z, would point away from the camera);
  then the Euler angles (face3d.matrix_to_euler) and t re-fitted for the rotation. It is exact
  for an exact weak-perspective projection of a non-planar shape.

  Args:
    shape: [L, 3] or [T, L, 3] model-space points.
    points: [T, L, 2] screen points.
    weights: [T, L] non-negative weights; each frame needs 4 non-coplanar weighted points.
  """
  shape = jnp.broadcast_to(shape, points.shape[:-1] + (3,))
  total = jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), 1e-12)[..., None]
  shape_centre = jnp.sum(weights[..., None] * shape, axis=-2, keepdims=True) / total
  point_centre = jnp.sum(weights[..., None] * points, axis=-2, keepdims=True) / total
  x = shape - shape_centre
  p = points - point_centre
  moments = jnp.einsum("tl,tli,tlj->tij", weights, x, x) + 1e-9 * jnp.eye(3)
  cross = jnp.einsum("tl,tli,tlj->tij", weights, p, x)
  affine = jnp.linalg.solve(moments, jnp.swapaxes(cross, -1, -2))  # [T, 3, 2] = M^T
  u, sv, vt = jnp.linalg.svd(_FLIP[:, None] * jnp.swapaxes(affine, -1, -2), full_matrices=False)
  rows = u @ vt  # [T, 2, 3]
  rotation = jnp.concatenate([rows, jnp.cross(rows[:, 0], rows[:, 1])[:, None]], axis=1)
  scale = jnp.mean(sv, axis=-1)
  projected_centre = scale[:, None] * _FLIP * jnp.einsum("tij,tj->ti", rows, shape_centre[:, 0])
  translation = point_centre[:, 0] - projected_centre
  return jnp.concatenate([face3d.matrix_to_euler(rotation), scale[:, None], translation], axis=-1)


def interpolate_missing(values: jax.Array, valid: jax.Array) -> jax.Array:
  """[T, C] values with rows where `valid` is false linearly interpolated from the nearest valid
  rows on each side (held constant beyond the first and last valid row)."""
  frames = jnp.arange(values.shape[0])
  before = jax.lax.cummax(jnp.where(valid, frames, -1))
  after = jax.lax.cummin(jnp.where(valid, frames, values.shape[0]), reverse=True)
  before_ok, after_ok = before >= 0, after < values.shape[0]
  before = jnp.where(before_ok, before, after)
  after = jnp.where(after_ok, after, before)
  span = jnp.maximum(after - before, 1)
  blend = jnp.where(before_ok & after_ok, (frames - before) / span, 0.0)[:, None]
  return (1 - blend) * values[before] + blend * values[after]


def initial_cameras(problem: ClipProblem, config: FitConfig) -> jax.Array:
  """[T, 6] normalised cameras of the mean shape, robust to outliers, interpolated where invalid.

  `closed_form_cameras` reweighted `config.init_iterations` times with `cauchy_weight` of its
  own residuals (iteratively reweighted least squares of the Cauchy loss).
  """
  base = problem.valid[:, None] * problem.point_weights
  cameras = closed_form_cameras(problem.basis.mean, problem.points, base)
  for _ in range(config.init_iterations):
    projected = face3d.project(problem.basis.mean, face3d.Camera.from_vector(cameras))[..., :2]
    residuals = projected - problem.points
    weights = base * cauchy_weight(residuals, config.robust_scale)
    cameras = closed_form_cameras(problem.basis.mean, problem.points, weights)
  return interpolate_missing(cameras, problem.valid > 0)


# ---------------------------------------------------------------------------------------------
# Gauss-Newton normal equations and their structured solution.


def normal_equations(id_coeffs: jax.Array, frame_params: jax.Array, problem: ClipProblem, config: FitConfig) -> ClipSystem:
  """The Gauss-Newton system of E at (a_id, q), with Cauchy (IRLS) weights: H x = -grad E.

  Data: J^T W J and J^T W r with W = m_t w_l cauchy_weight(r_tl) / sigma^2 and the analytic
  Jacobians of s flip_y(R S)[:2] + t; priors and smoothness are quadratic and enter exactly.
  Padded frames get H = I and b = 0, so their step is zero.
  """
  basis = problem.basis
  num_exp = basis.exp_basis.shape[-1]
  exp_coeffs, cameras = frame_params[:, :num_exp], frame_params[:, num_exp:]
  pose, scale, translation = cameras[:, :3], cameras[:, 3], cameras[:, 4:]
  shape = basis.mean + jnp.einsum("lck,k->lc", basis.id_basis, id_coeffs) + jnp.einsum("lck,tk->tlc", basis.exp_basis, exp_coeffs)
  rotation = face3d.euler_to_matrix(pose)  # [T, 3, 3]
  d_rotation = jax.vmap(jax.jacfwd(face3d.euler_to_matrix))(pose)  # [T, 3, 3, 3 angles]
  rows = _FLIP[:, None] * rotation[:, :2]  # [T, 2, 3]
  unscaled = jnp.einsum("tij,tlj->tli", rows, shape)
  residuals = scale[:, None, None] * unscaled + translation[:, None] - problem.points

  s = scale[:, None, None, None]
  j_exp = s * jnp.einsum("tij,ljk->tlik", rows, basis.exp_basis)
  j_pose = s * jnp.einsum("tija,tlj->tlia", _FLIP[:, None, None] * d_rotation[:, :2], shape)
  j_translation = jnp.broadcast_to(jnp.eye(2), residuals.shape + (2,))
  j_frame = jnp.concatenate([j_exp, j_pose, unscaled[..., None], j_translation], axis=-1)  # [T, L, 2, P]
  j_id = s * jnp.einsum("tij,ljk->tlik", rows, basis.id_basis)  # [T, L, 2, K_id]
  w = (problem.valid[:, None] * problem.point_weights * cauchy_weight(residuals, config.robust_scale)
       / config.landmark_noise ** 2)

  num_params = j_frame.shape[-1]
  exp_mask = (jnp.arange(num_params) < num_exp).astype(jnp.float32)
  step_weights = config.step_weights(num_exp)
  pairs = problem.real[1:] * problem.real[:-1]
  links = jnp.concatenate([pairs, jnp.zeros(1)])  # link t couples frames t and t+1
  links_before = jnp.concatenate([jnp.zeros(1), pairs])
  differences = jnp.diff(frame_params, axis=0)
  forward = jnp.concatenate([differences, jnp.zeros((1, num_params))]) * links[:, None]
  backward = jnp.concatenate([jnp.zeros((1, num_params)), differences]) * links_before[:, None]

  frame_blocks = (jnp.einsum("tl,tlip,tliq->tpq", w, j_frame, j_frame)
                  + jax.vmap(jnp.diag)(config.exp_prior * problem.real[:, None] * exp_mask
                                       + (links + links_before)[:, None] * step_weights))
  frame_grad = (jnp.einsum("tl,tlip,tli->tp", w, j_frame, residuals)
                + config.exp_prior * problem.real[:, None] * exp_mask * frame_params
                + step_weights * (backward - forward))
  real = problem.real[:, None, None] > 0
  frame_blocks = jnp.where(real, frame_blocks, jnp.eye(num_params))
  return ClipSystem(
      frame_blocks=frame_blocks,
      couplings=links[:, None] * step_weights,
      cross=jnp.einsum("tl,tlip,tliq->tpq", w, j_frame, j_id),
      id_block=jnp.einsum("tl,tlip,tliq->pq", w, j_id, j_id) + config.id_prior * jnp.eye(id_coeffs.shape[0]),
      frame_rhs=-jnp.where(real[..., 0], frame_grad, 0.0),
      id_rhs=-(jnp.einsum("tl,tlip,tli->p", w, j_id, residuals) + config.id_prior * id_coeffs),
  )


def solve_clip_system(system: ClipSystem) -> tuple[jax.Array, jax.Array]:
  """Exact solution (x_frames [T, P], x_id [K_id]) of a `ClipSystem`.

  The frame part is block tridiagonal, -D_{t-1} x_{t-1} + A_t x_t - D_t x_{t+1} = b_t: forward
  elimination A'_t = A_t - D_{t-1} A'_{t-1}^-1 D_{t-1}, b'_t = b_t + D_{t-1} A'_{t-1}^-1 b'_{t-1},
  then back substitution x_t = A'_t^-1 (b'_t + D_t x_{t+1}), run on [b, C] at once (K_id + 1
  right-hand sides). The identity then solves its Schur complement
  (H_id - C^T A^-1 C) x_id = b_id - C^T A^-1 b, and x_frames = A^-1 b - A^-1 C x_id.
  """
  rhs = jnp.concatenate([system.frame_rhs[..., None], system.cross], axis=-1)  # [T, P, 1 + K_id]
  before = jnp.concatenate([jnp.zeros_like(system.couplings[:1]), system.couplings[:-1]])

  def eliminate(carry, inputs):
    inverse_prev, solved_prev = carry
    block, coupling, right = inputs
    reduced = block - coupling[:, None] * inverse_prev * coupling[None, :]
    inverse = jnp.linalg.inv(reduced)
    solved = inverse @ (right + coupling[:, None] * solved_prev)
    return (inverse, solved), (inverse, solved)

  num_params = system.frame_blocks.shape[-1]
  start = (jnp.zeros((num_params, num_params)), jnp.zeros_like(rhs[0]))
  _, (inverses, partial) = jax.lax.scan(eliminate, start, (system.frame_blocks, before, rhs))

  def substitute(next_solution, inputs):
    inverse, solved, coupling = inputs
    solution = solved + inverse @ (coupling[:, None] * next_solution)
    return solution, solution

  _, solutions = jax.lax.scan(substitute, jnp.zeros_like(rhs[0]), (inverses, partial, system.couplings), reverse=True)
  frame_solution, frame_cross = solutions[..., 0], solutions[..., 1:]
  schur = system.id_block - jnp.einsum("tpk,tpj->kj", system.cross, frame_cross)
  id_solution = jnp.linalg.solve(schur, system.id_rhs - jnp.einsum("tpk,tp->k", system.cross, frame_solution))
  return frame_solution - jnp.einsum("tpk,k->tp", frame_cross, id_solution), id_solution


def _damped(system: ClipSystem, damping: jax.Array) -> ClipSystem:
  """Marquardt damping: H + lambda diag(H), with the diagonal floored at 1 (an absolute Levenberg
  term where a direction is unconstrained)."""
  frame_diag = jnp.maximum(jnp.diagonal(system.frame_blocks, axis1=-2, axis2=-1), 1.0)
  id_diag = jnp.maximum(jnp.diagonal(system.id_block), 1.0)
  return system._replace(frame_blocks=system.frame_blocks + damping * jax.vmap(jnp.diag)(frame_diag),
                         id_block=system.id_block + damping * jnp.diag(id_diag))


@functools.partial(jax.jit, static_argnames=("config",))
def _fit_normalized(problem: ClipProblem, config: FitConfig):
  """(a_id [K_id], q [T, P], |r| [T, L]) of a padded, normalised clip."""
  num_id, num_exp = problem.basis.id_basis.shape[-1], problem.basis.exp_basis.shape[-1]
  cameras = initial_cameras(problem, config)
  frame_params = jnp.concatenate([jnp.zeros((cameras.shape[0], num_exp)), cameras], axis=-1)
  id_coeffs = jnp.zeros(num_id)

  def iteration(state, _):
    id_coeffs, frame_params, damping, energy = state
    frame_step, id_step = solve_clip_system(_damped(normal_equations(id_coeffs, frame_params, problem, config), damping))
    new_id, new_frames = id_coeffs + id_step, frame_params + frame_step
    new_energy = objective(new_id, new_frames, problem, config)
    better = new_energy < energy
    return (jnp.where(better, new_id, id_coeffs), jnp.where(better, new_frames, frame_params),
            jnp.where(better, damping * 0.2, damping * 10.0), jnp.where(better, new_energy, energy)), None

  start = (id_coeffs, frame_params, jnp.float32(config.initial_damping), objective(id_coeffs, frame_params, problem, config))
  (id_coeffs, frame_params, _, _), _ = jax.lax.scan(iteration, start, None, length=config.iterations)
  residuals = reproject(problem.basis, id_coeffs, frame_params[:, :num_exp], frame_params[:, num_exp:]) - problem.points
  return id_coeffs, frame_params, jnp.linalg.norm(residuals, axis=-1)


def bucket_size(num_frames: int, min_bucket: int = 16) -> int:
  """The padded length of a clip: the next power of two, at least `min_bucket`."""
  return max(int(min_bucket), 1 << max(int(num_frames) - 1, 0).bit_length())


def face_box_size(points: np.ndarray, valid: np.ndarray) -> float:
  """The face size f: median over valid frames of sqrt(width * height) of the points' box."""
  extent = np.ptp(points[valid], axis=1)  # [T_valid, 2]
  return float(np.median(np.sqrt(extent[:, 0] * extent[:, 1])))


class Normalization(NamedTuple):
  """The map between image pixels and a clip's normalised units: p' = (p - centre) / size."""

  centre: np.ndarray  # [2] pixels
  size: float  # pixels

  def cameras_to_pixels(self, cameras) -> np.ndarray:
    """[..., 6] normalised cameras (pose, s', t') -> pixel cameras (pose, s' f, t' f + o)."""
    cameras = np.asarray(cameras, np.float64)
    return np.concatenate([cameras[..., :3], cameras[..., 3:4] * self.size, cameras[..., 4:] * self.size + self.centre], axis=-1)


def prepare_clip(model: face3d.MorphableModel, points, *, vertex_ids=None, valid=None, point_weights=None,
                 min_bucket: int = 16) -> tuple[ClipProblem, Normalization]:
  """Checks a clip's landmarks and normalises and pads them (arguments as `fit_clip`)."""
  points = np.asarray(points, np.float64)
  vertex_ids = np.asarray(model.landmarks if vertex_ids is None else vertex_ids)
  if points.ndim != 3 or points.shape[-1] != 2 or points.shape[1] != vertex_ids.shape[0]:
    raise ValueError(f"fit_clip: points must be [T, L, 2] with L = {vertex_ids.shape[0]} (len(vertex_ids)), "
                     f"got shape {points.shape}")
  num_frames, num_points = points.shape[:2]
  finite = np.all(np.isfinite(points), axis=(1, 2))
  valid = finite if valid is None else np.asarray(valid, bool)
  if valid.shape != (num_frames,):
    raise ValueError(f"fit_clip: valid must be [T] = [{num_frames}], got shape {valid.shape}")
  if np.any(valid & ~finite):
    raise ValueError(f"fit_clip: frames {np.flatnonzero(valid & ~finite).tolist()} are marked valid but have non-finite points")
  if not np.any(valid):
    raise ValueError("fit_clip: no valid frame: the clip has no landmarks to fit")
  point_weights = np.ones(num_points) if point_weights is None else np.asarray(point_weights, np.float64)
  if point_weights.shape != (num_points,) or np.any(point_weights < 0):
    raise ValueError(f"fit_clip: point_weights must be [L] = [{num_points}] and non-negative, got shape {point_weights.shape}")
  if np.any((vertex_ids < 0) | (vertex_ids >= model.num_vertices)):
    raise ValueError(f"fit_clip: vertex_ids must be in [0, {model.num_vertices}) for model {model.name!r}")

  norm = Normalization(centre=np.median(points[valid].mean(axis=1), axis=0), size=face_box_size(points, valid))
  padded = bucket_size(num_frames, min_bucket)
  normalized = np.zeros((padded, num_points, 2), np.float32)
  normalized[:num_frames][valid] = (points[valid] - norm.centre) / norm.size
  problem = ClipProblem(
      basis=landmark_basis(model, vertex_ids),
      points=jnp.asarray(normalized),
      valid=jnp.asarray(np.pad(valid, (0, padded - num_frames)), jnp.float32),
      real=jnp.asarray(np.arange(padded) < num_frames, jnp.float32),
      point_weights=jnp.asarray(point_weights, jnp.float32),
  )
  return problem, norm


def fit_clip(model: face3d.MorphableModel, points, *, vertex_ids=None, valid=None, point_weights=None,
             config: FitConfig = FitConfig()) -> FitResult:
  """Fits one identity per clip and an expression and a camera per frame to 2D landmarks.

  Args:
    model: the morphable model.
    points: [T, L, 2] landmarks in image pixels (x right, y down); rows of invalid frames are
      ignored and may be NaN.
    vertex_ids: [L] model vertex of each landmark; default `model.landmarks` (iBUG-68).
    valid: [T] bool, frames that have landmarks; default: frames whose points are all finite.
      Invalid frames get coefficients and cameras interpolated by the smoothness term and a NaN
      residual.
    point_weights: [L] non-negative weight of each landmark (default 1).
    config: `FitConfig`.

  Returns:
    A `FitResult` in the pixels of `points`.
  """
  problem, norm = prepare_clip(model, points, vertex_ids=vertex_ids, valid=valid, point_weights=point_weights,
                               min_bucket=config.min_bucket)
  num_frames = np.shape(points)[0]
  id_coeffs, frame_params, errors = (np.asarray(a, np.float64) for a in _fit_normalized(problem, config))
  frame_params, errors = frame_params[:num_frames], errors[:num_frames]
  valid = np.asarray(problem.valid[:num_frames]) > 0
  return FitResult(
      id_coeffs=id_coeffs.astype(np.float32),
      exp_coeffs=frame_params[:, :model.num_exp].astype(np.float32),
      cameras=norm.cameras_to_pixels(frame_params[:, model.num_exp:]).astype(np.float32),
      residual=np.where(valid, errors.mean(axis=1) * norm.size, np.nan).astype(np.float32),
  )
