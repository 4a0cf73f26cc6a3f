"""tfvgan_jax.metrics and tfvgan_jax.onnx_models against independent computations.

SSIM (Wang et al. 2004) and E_tmp against brute-force NumPy; Farneback's flow against known
translations; the Fréchet distance against closed forms and a symmetric eigen-decomposition route;
E_id, E_pose, E_exp and the results table against hand-worked cases; the ONNX wrapper against NumPy
running the same maths as tiny models built here with onnx.helper (nothing is downloaded).
"""

import json

import cv2
import jax
import numpy as np
import pytest
import scipy.linalg

from helpers import save_onnx_model
from tfvgan_jax import metrics, onnx_models

# Compiled once per shape: op-by-op dispatch of the convolutions and the warp is slower than this.
ssim_per_sample = jax.jit(metrics.ssim_per_sample, static_argnames="filter_size")
warping_error_per_sample = jax.jit(metrics.temporal_warping_error_per_sample)
warping_error = jax.jit(metrics.temporal_warping_error)


def brute_force_ssim(x, y, max_value=1.0, filter_size=11, sigma=1.5, k1=0.01, k2=0.03):
  """[B] mean SSIM in float64, one window position at a time, 'valid' positions only."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  _, height, width, _ = x.shape
  size = min(filter_size, height, width)
  offsets = np.arange(size) - (size - 1) / 2
  window = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma ** 2))
  window /= window.sum()
  c1 = (k1 * max_value) ** 2
  c2 = (k2 * max_value) ** 2
  results = []
  for xb, yb in zip(x, y):
    values = []
    for i in range(height - size + 1):
      for j in range(width - size + 1):
        for c in range(x.shape[-1]):
          px = xb[i:i + size, j:j + size, c]
          py = yb[i:i + size, j:j + size, c]
          mu_x = np.sum(window * px)
          mu_y = np.sum(window * py)
          var_x = np.sum(window * (px - mu_x) ** 2)
          var_y = np.sum(window * (py - mu_y) ** 2)
          cov = np.sum(window * (px - mu_x) * (py - mu_y))
          values.append((2 * mu_x * mu_y + c1) * (2 * cov + c2)
                        / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)))
    results.append(np.mean(values))
  return np.asarray(results)


def random_pair(shape, seed=0, noise=0.1):
  """x uniform in [0, 1] and y = x plus clipped Gaussian noise, so that SSIM is well inside (0, 1)."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=shape).astype(np.float32)
  y = np.clip(x + rng.normal(scale=noise, size=shape), 0.0, 1.0).astype(np.float32)
  return x, y


# SSIM.


def test_ssim_matches_brute_force():
  x, y = random_pair((2, 16, 16, 3))
  np.testing.assert_allclose(ssim_per_sample(x, y), brute_force_ssim(x, y), atol=1e-5)
  np.testing.assert_allclose(metrics.ssim(x, y), brute_force_ssim(x, y).mean(), atol=1e-5)


def test_ssim_matches_brute_force_with_other_parameters():
  x, y = random_pair((1, 14, 17, 2), seed=1, noise=0.3)
  got = ssim_per_sample(x * 255.0, y * 255.0, max_value=255.0, filter_size=7, filter_sigma=1.0, k1=0.02, k2=0.05)
  want = brute_force_ssim(x * 255.0, y * 255.0, max_value=255.0, filter_size=7, sigma=1.0, k1=0.02, k2=0.05)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_ssim_shrinks_the_filter_on_small_images():
  x, y = random_pair((2, 8, 8, 3), seed=2)
  # An 8 x 8 window leaves a single position; an unshrunk 11 x 11 one would leave none.
  np.testing.assert_allclose(ssim_per_sample(x, y), brute_force_ssim(x, y, filter_size=8), atol=1e-5)
  x, y = random_pair((1, 9, 12, 1), seed=3)
  np.testing.assert_allclose(ssim_per_sample(x, y), brute_force_ssim(x, y, filter_size=9), atol=1e-5)


def test_ssim_identity_and_symmetry():
  x, y = random_pair((3, 16, 16, 3), seed=4, noise=0.2)
  np.testing.assert_allclose(ssim_per_sample(x, x), np.ones(3), atol=1e-6)
  np.testing.assert_allclose(ssim_per_sample(x, y), ssim_per_sample(y, x), atol=1e-7)
  assert np.all(np.asarray(ssim_per_sample(x, y)) < 0.99)


def test_ssim_decreases_with_a_constant_offset():
  x = np.random.default_rng(5).uniform(0.0, 0.6, size=(1, 16, 16, 3)).astype(np.float32)
  offsets = [0.0, 0.05, 0.1, 0.2, 0.4]
  values = np.asarray([float(ssim_per_sample(x, x + d)[0]) for d in offsets])
  assert values[0] == pytest.approx(1.0, abs=1e-6)
  assert np.all(np.diff(values) < 0), values
  # A pure offset leaves the structure term at 1: only the luminance term moves.
  np.testing.assert_allclose(values[-1], brute_force_ssim(x, x + 0.4)[0], atol=1e-5)


def test_ssim_is_invariant_to_the_range_when_max_value_follows():
  x, y = random_pair((2, 12, 12, 3), seed=6)
  np.testing.assert_allclose(ssim_per_sample(x * 255.0, y * 255.0, max_value=255.0), ssim_per_sample(x, y), atol=1e-5)


def test_ssim_matches_skimage():
  skimage_metrics = pytest.importorskip("skimage.metrics")
  # skimage filters the whole image with reflection and then crops (win_size - 1) / 2 = 5 pixels
  # per side; with truncate=3.5 its window is 11 taps at sigma 1.5, so the kept positions are
  # exactly the 'valid' ones.
  x, y = random_pair((2, 20, 18, 3), seed=7)
  want = [skimage_metrics.structural_similarity(
      xb, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)
          for xb, yb in zip(x.astype(np.float64), y.astype(np.float64))]
  np.testing.assert_allclose(ssim_per_sample(x, y), want, atol=1e-5)


# Temporal warping error.


def test_warping_error_is_zero_for_identical_frames_and_zero_flow():
  frame = np.random.default_rng(8).uniform(size=(2, 6, 7, 3)).astype(np.float32)
  flow = np.zeros((2, 6, 7, 2), np.float32)
  mask = np.ones((2, 6, 7), bool)
  np.testing.assert_allclose(warping_error_per_sample(frame, frame, flow, mask), [0.0, 0.0], atol=1e-12)
  assert float(warping_error(frame, frame, flow, mask)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
def test_warping_error_vanishes_for_a_one_pixel_translation(axis):
  """warp samples prev at q + flow(q): flow +1 along x makes the warp read the pixel to the right."""
  rng = np.random.default_rng(9)
  height, width = 6, 7
  prev = rng.uniform(size=(1, height, width, 3)).astype(np.float32)
  current = rng.uniform(size=(1, height, width, 3)).astype(np.float32)
  interior = np.zeros((1, height, width), bool)
  flow = np.zeros((1, height, width, 2), np.float32)
  flow[..., axis] = 1.0
  if axis == 0:  # Content moved left by a pixel: current(x) = prev(x + 1).
    current[:, :, :-1] = prev[:, :, 1:]
    interior[:, :, :-1] = True
    edge = (current[:, :, -1] - prev[:, :, -1]) ** 2  # The last column reads the clamped border.
  else:  # Content moved up by a pixel: current(y) = prev(y + 1).
    current[:, :-1] = prev[:, 1:]
    interior[:, :-1] = True
    edge = (current[:, -1] - prev[:, -1]) ** 2
  assert float(warping_error_per_sample(current, prev, flow, interior)[0]) == pytest.approx(0.0, abs=1e-10)
  full = np.ones_like(interior)
  want = edge.sum() / (height * width * 3)
  assert float(warping_error_per_sample(current, prev, flow, full)[0]) == pytest.approx(want, rel=1e-5)
  # The opposite sign misaligns the frames.
  assert float(warping_error_per_sample(current, prev, -flow, interior)[0]) > 1e-2


def test_warping_error_matches_integer_shifts_in_numpy():
  rng = np.random.default_rng(10)
  batch, height, width, channels = 2, 5, 6, 3
  prev = rng.uniform(size=(batch, height, width, channels)).astype(np.float32)
  current = rng.uniform(size=(batch, height, width, channels)).astype(np.float32)
  flow = rng.integers(-2, 3, size=(batch, height, width, 2)).astype(np.float32)
  mask = rng.uniform(size=(batch, height, width)) < 0.6
  want = []
  for b in range(batch):
    errors = []
    for i in range(height):
      for j in range(width):
        if mask[b, i, j]:
          # Integer flows land on pixel centres; out-of-image reads take the nearest border pixel.
          si = np.clip(i + int(flow[b, i, j, 1]), 0, height - 1)
          sj = np.clip(j + int(flow[b, i, j, 0]), 0, width - 1)
          errors.extend((current[b, i, j] - prev[b, si, sj]) ** 2)
    want.append(np.mean(errors))
  np.testing.assert_allclose(warping_error_per_sample(current, prev, flow, mask), want, rtol=1e-5)
  np.testing.assert_allclose(warping_error(current, prev, flow, mask), np.mean(want), rtol=1e-5)


def test_warping_error_constant_difference_and_empty_masks():
  rng = np.random.default_rng(11)
  prev = rng.uniform(0.0, 0.5, size=(3, 4, 5, 3)).astype(np.float32)
  differences = np.asarray([0.1, 0.3, 0.2], np.float32)
  current = prev + differences[:, None, None, None]
  flow = np.zeros((3, 4, 5, 2), np.float32)
  mask = rng.uniform(size=(3, 4, 5)) < 0.5
  mask[:2, 0, 0] = True
  mask[2] = False
  per_sample = warping_error_per_sample(current, prev, flow, mask)
  np.testing.assert_allclose(per_sample, [0.01, 0.09, 0.0], rtol=1e-5, atol=1e-12)
  # The empty sample is left out of the mean rather than counted as 0.
  assert float(warping_error(current, prev, flow, mask)) == pytest.approx(0.05, rel=1e-5)
  assert float(warping_error(current, prev, flow, np.zeros_like(mask))) == 0.0


def test_to_unit_range():
  images = np.asarray([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.25], np.float32)
  np.testing.assert_allclose(metrics.to_unit_range(images), [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0])


# Temporal error with Farneback's optical flow.


def textured_video(steps, frames=3, size=48, seed=12):
  """[T, size, size, 3] uint8 windows of a smooth random texture, the window moving by `steps` (dx, dy)
  pixels per frame, so that the content moves by (-dx, -dy): frame t at q shows frame t-1 at q + step."""
  rng = np.random.default_rng(seed)
  texture = cv2.GaussianBlur(rng.uniform(0, 255, size=(size + 40, size + 40, 3)).astype(np.float32), (0, 0), 2.0)
  texture = np.clip((texture - texture.mean()) * 4.0 + 128.0, 0, 255).astype(np.uint8)
  dx, dy = steps
  return np.stack([texture[10 + t * dy:10 + t * dy + size, 10 + t * dx:10 + t * dx + size] for t in range(frames)])


def test_farneback_flow_of_a_translation_points_back_to_frame_t_minus_1():
  video = textured_video((2, -1))
  flow = metrics.optical_flow_farneback(video[0], video[1])
  assert flow.shape == (48, 48, 2) and flow.dtype == np.float32
  # The window moved by (+2, -1), the content by (-2, +1): each pixel at t was at q + (2, -1) at t-1.
  np.testing.assert_allclose(flow[12:36, 12:36].mean(axis=(0, 1)), [2.0, -1.0], atol=0.05)
  # The forward flow (frame t-1 -> t, called with the frames swapped) is the opposite.
  np.testing.assert_allclose(metrics.optical_flow_farneback(video[1], video[0])[12:36, 12:36].mean(axis=(0, 1)),
                             [-2.0, 1.0], atol=0.05)


def test_flow_consistency_mask_hand_cases():
  height, width = 4, 5
  backward = np.zeros((height, width, 2), np.float32)
  backward[..., 0] = 1.0
  # Forward flow that undoes the backward flow: consistent except where q + (1, 0) leaves the image
  # (the last column's centre W - 0.5 moves to W + 0.5).
  mask = np.asarray(metrics.flow_consistency_mask(backward, -backward))
  want = np.ones((height, width), bool)
  want[:, -1] = False
  np.testing.assert_array_equal(mask, want)
  # A forward flow in the same direction fails the round trip: |2|^2 = 4 > 0.01 * 2 + 0.5.
  assert not np.any(np.asarray(metrics.flow_consistency_mask(backward, backward)))
  # Within the absolute tolerance: |0.6|^2 = 0.36 <= 0.01 * (1 + 0.16) + 0.5.
  mask = np.asarray(metrics.flow_consistency_mask(backward, -0.4 * backward))
  np.testing.assert_array_equal(mask, want)


def test_temporal_error_optical_flow_static_smooth_and_flicker():
  video = textured_video((1, 1), frames=3)
  static = np.repeat(video[:1], 3, axis=0)
  assert metrics.temporal_error_optical_flow(static) == pytest.approx(0.0, abs=1e-6)
  assert metrics.temporal_error_optical_flow(static, mask="all") == pytest.approx(0.0, abs=1e-6)
  smooth = metrics.temporal_error_optical_flow(video)
  assert smooth < 1e-5
  # A static picture whose brightness alternates by 20 levels: no motion explains the change.
  flicker = np.stack([np.clip(video[0].astype(np.int32) + d, 0, 255).astype(np.uint8) for d in (0, 20, 0)])
  flickering = metrics.temporal_error_optical_flow(flicker)
  assert flickering > 1e-3 > 100 * smooth
  # The same motion without the flow (zero flow, all pixels) would count as a large error.
  unit = video.astype(np.float32) / 255.0
  no_flow = float(metrics.temporal_warping_error(unit[1:], unit[:-1], np.zeros((2, 48, 48, 2), np.float32),
                                                 np.ones((2, 48, 48), bool)))
  assert no_flow > 100 * smooth


def test_temporal_error_with_the_inputs_flow_counts_motion_the_input_does_not_have():
  moving = textured_video((1, 1), frames=3)
  frozen = np.repeat(moving[:1], 3, axis=0)
  # An output that moves as its input does: small either way.
  assert metrics.temporal_error_optical_flow(moving, flow_frames=moving) < 1e-5
  # An output frozen while its input moves: steady by its own flow, but not with the input's.
  assert metrics.temporal_error_optical_flow(frozen) == pytest.approx(0.0, abs=1e-6)
  assert metrics.temporal_error_optical_flow(frozen, flow_frames=moving) > 100 * metrics.temporal_error_optical_flow(
      moving, flow_frames=moving)
  with pytest.raises(ValueError, match="differ in shape"):
    metrics.temporal_error_optical_flow(moving, flow_frames=moving[:2])


def test_temporal_error_optical_flow_rejects_bad_inputs():
  with pytest.raises(ValueError, match="T >= 2"):
    metrics.temporal_error_optical_flow(np.zeros((1, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match="uint8"):
    metrics.optical_flow_farneback(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32))
  with pytest.raises(ValueError, match="mask"):
    metrics.temporal_error_optical_flow(np.zeros((2, 8, 8, 3), np.uint8), mask="some")


# Fréchet distance and FID.


def random_spd(dims, rng, rank=None):
  """A random symmetric positive (semi-)definite [dims, dims] matrix of the given rank."""
  factor = rng.normal(size=(dims, rank or dims))
  return factor @ factor.T / dims


def frechet_distance_by_eigenvalues(mu1, sigma1, mu2, sigma2):
  """d^2 with Tr((s1 s2)^(1/2)) = Tr((s1^(1/2) s2 s1^(1/2))^(1/2)), both roots from symmetric eigh."""
  values, vectors = np.linalg.eigh(sigma1)
  root1 = vectors @ np.diag(np.sqrt(np.clip(values, 0, None))) @ vectors.T
  inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
  return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None)))


def test_activation_statistics_match_numpy():
  features = np.random.default_rng(13).normal(size=(30, 4))
  mu, sigma = metrics.activation_statistics(features)
  np.testing.assert_allclose(mu, features.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-10)
  with pytest.raises(ValueError, match="N >= 2"):
    metrics.activation_statistics(features[:1])


def test_frechet_distance_hand_cases():
  # 1D: (0 - 3)^2 + 1 + 4 - 2 sqrt(1 * 4) = 10.
  assert metrics.frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0, rel=1e-12)
  # Equal covariances: only the means count.
  sigma = random_spd(3, np.random.default_rng(14))
  assert metrics.frechet_distance([1.0, 2.0, 3.0], sigma, [1.0, 0.0, 3.0], sigma) == pytest.approx(4.0, rel=1e-8)
  # Zero covariances (singular product): the offset retry leaves |mu1 - mu2|^2 up to O(eps).
  zero = np.zeros((2, 2))
  assert metrics.frechet_distance([0.0, 0.0], zero, [3.0, 4.0], zero) == pytest.approx(25.0, abs=1e-5)


def test_frechet_distance_diagonal_closed_form():
  rng = np.random.default_rng(15)
  a, b = rng.uniform(0.1, 3.0, size=(2, 6))
  mu1, mu2 = rng.normal(size=(2, 6))
  want = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
  assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-10)


def test_frechet_distance_matches_the_eigen_route_on_random_spd_matrices():
  rng = np.random.default_rng(16)
  for dims in (2, 5, 16):
    mu1, mu2 = rng.normal(size=(2, dims))
    sigma1, sigma2 = random_spd(dims, rng), random_spd(dims, rng)
    got = metrics.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert got == pytest.approx(frechet_distance_by_eigenvalues(mu1, sigma1, mu2, sigma2), rel=1e-8)
    assert got == pytest.approx(metrics.frechet_distance(mu2, sigma2, mu1, sigma1), rel=1e-8)
    assert metrics.frechet_distance(mu1, sigma1, mu1, sigma1) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_with_fewer_samples_than_dimensions():
  rng = np.random.default_rng(17)
  mu1, sigma1 = metrics.activation_statistics(rng.normal(size=(5, 20)))
  mu2, sigma2 = metrics.activation_statistics(rng.normal(size=(5, 20)) + 0.5)
  got = metrics.frechet_distance(mu1, sigma1, mu2, sigma2)
  assert np.isfinite(got)
  # Rank-4 covariances: eps * I moves d^2 by O(eps * D) at most.
  assert got == pytest.approx(frechet_distance_by_eigenvalues(mu1, sigma1, mu2, sigma2), abs=1e-3)


def test_frechet_distance_rejects_non_covariances_and_bad_shapes():
  with pytest.raises(ValueError, match="imaginary"):
    metrics.frechet_distance([0.0, 0.0], -np.eye(2), [0.0, 0.0], np.eye(2))
  with pytest.raises(ValueError, match="covariances"):
    metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_fid_of_two_gaussian_samples_approaches_the_analytic_distance():
  rng = np.random.default_rng(18)
  a = rng.normal(size=(20000, 3))
  b = rng.normal(size=(20000, 3)) * 2.0 + [1.0, 0.0, 0.0]
  # N(0, I) against N((1, 0, 0), 4 I): 1 + 3 (1 - 2)^2 = 4.
  assert metrics.fid(a, b) == pytest.approx(4.0, abs=0.1)
  assert metrics.fid(a, b) == pytest.approx(
      metrics.frechet_distance(*metrics.activation_statistics(a), *metrics.activation_statistics(b)), rel=1e-12)


# Identity similarity and E_id.


def test_identity_similarity_hand_cases_and_numpy():
  a = np.asarray([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [3.0, 4.0]], np.float32)
  b = np.asarray([[0.0, 2.0], [2.0, 2.0], [-1.0, 0.0], [4.0, 3.0]], np.float32)
  np.testing.assert_allclose(metrics.identity_similarity_per_sample(a, b), [0.0, 1.0, -1.0, 0.96], atol=1e-6)
  assert float(metrics.identity_similarity(a, b)) == pytest.approx(0.24, abs=1e-6)
  assert float(metrics.identity_error(a, b)) == pytest.approx(0.76, abs=1e-6)
  rng = np.random.default_rng(19)
  a, b = rng.normal(size=(2, 6, 16))
  want = [np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)) for x, y in zip(a, b)]
  np.testing.assert_allclose(jax.jit(metrics.identity_similarity_per_sample)(a, b), want, rtol=1e-5)


# Pose error E_pose.


def test_pose_error_hand_cases():
  degrees = np.deg2rad
  cameras_a = np.asarray([[degrees(10.0), degrees(20.0), degrees(-30.0), 1.0, 5.0, 6.0],
                          [degrees(179.0), 0.0, 0.0, 2.0, 0.0, 0.0]], np.float32)
  cameras_b = np.asarray([[0.0, 0.0, 0.0, 3.0, 0.0, 0.0],
                          [degrees(-179.0), degrees(4.0), degrees(3.0), 1.0, 9.0, 9.0]], np.float32)
  # The second frame's pitch differs by 2 degrees across the +-180 seam, not 358.
  np.testing.assert_allclose(metrics.pose_difference_degrees(cameras_a, cameras_b),
                             [[10.0, 20.0, -30.0], [-2.0, -4.0, -3.0]], atol=1e-4)
  np.testing.assert_allclose(metrics.pose_error_per_angle(cameras_a, cameras_b), [6.0, 12.0, 16.5], atol=1e-4)
  want = (np.sqrt(100.0 + 400.0 + 900.0) + np.sqrt(4.0 + 16.0 + 9.0)) / 2
  assert float(jax.jit(metrics.pose_error)(cameras_a, cameras_b)) == pytest.approx(want, rel=1e-5)
  assert float(metrics.pose_error(cameras_a, cameras_a)) == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(ValueError, match="camera"):
    metrics.pose_error(cameras_a, cameras_b[:1])


# Expression error E_exp.


def test_expression_error_hand_cases():
  rng = np.random.default_rng(20)
  reference = rng.uniform(0, 100, size=(2, 68, 2)).astype(np.float32)
  reference[:, 36] = [20.0, 40.0]
  reference[:, 45] = [70.0, 40.0]  # 50 pixels between the outer eye corners.
  output = reference + np.asarray([3.0, 4.0], np.float32)
  np.testing.assert_allclose(metrics.expression_error_per_frame(output, reference), [5.0, 5.0], rtol=1e-5)
  np.testing.assert_allclose(metrics.expression_error_per_frame(output, reference, normalize="inter_ocular"),
                             [0.1, 0.1], rtol=1e-5)
  # Aligning first removes a pure translation.
  assert float(metrics.expression_error(output, reference, align=True)) == pytest.approx(0.0, abs=1e-4)
  with pytest.raises(ValueError, match="68 or 5-point"):
    metrics.expression_error(output[:, :10], reference[:, :10], normalize="inter_ocular")


def test_expression_error_matches_numpy_loops():
  rng = np.random.default_rng(21)
  a, b = rng.normal(size=(2, 3, 5, 2)) * 10
  want = [np.mean([np.hypot(*(a[t, l] - b[t, l])) for l in range(5)]) / np.hypot(*(b[t, 0] - b[t, 1]))
          for t in range(3)]
  per_frame = jax.jit(metrics.expression_error_per_frame, static_argnames=("normalize", "align"))
  got = per_frame(a, b, normalize="inter_ocular")
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(metrics.expression_error(a, b, normalize="inter_ocular")) == pytest.approx(np.mean(want), rel=1e-5)


def test_similarity_align_matches_least_squares():
  rng = np.random.default_rng(22)
  target = rng.normal(size=(2, 10, 2)) * 20
  angle, scale, shift = 0.4, 1.7, np.asarray([5.0, -3.0])
  rotation = np.asarray([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  source = (target - shift) @ rotation / scale  # target = scale * R @ source + shift.
  np.testing.assert_allclose(metrics.similarity_align(source, target), target, atol=1e-3)
  assert float(metrics.expression_error(source, target)) > 1.0
  # With noise: q ~ [a -b; b a] p + t solved as a linear least-squares problem in (a, b, tx, ty).
  noisy = source + rng.normal(size=source.shape)
  for t in range(2):
    x, y = noisy[t, :, 0], noisy[t, :, 1]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    design = np.concatenate([np.stack([x, -y, ones, zeros], 1), np.stack([y, x, zeros, ones], 1)])
    params = np.linalg.lstsq(design, np.concatenate([target[t, :, 0], target[t, :, 1]]), rcond=None)[0]
    want = (design @ params).reshape(2, -1).T
    np.testing.assert_allclose(metrics.similarity_align(noisy, target)[t], want, atol=1e-3)


# The results table.


def test_results_table_hand_case():
  rows = {
      "FSGAN": {"fid": 45.9, "e_id": 0.89, "e_pose": (2.27, 3.21, 0.76), "e_exp": 3.23},
      "UniFaceGAN": {"fid": 24.4, "ssim": 0.82, "e_id": 0.12, "e_pose": np.asarray([0.21, 0.25, 0.12]),
                     "e_exp": float("nan")},
  }
  markdown, document = metrics.results_table(rows)
  assert markdown == (
      "| Method | FID ↓ | SSIM ↑ | E_id ↓ | E_pose ↓ | E_exp ↓ |\n"
      "|---|---:|---:|---:|---:|---:|\n"
      "| FSGAN | 45.90 | - | 0.89 | (2.27, 3.21, 0.76) | 3.23 |\n"
      "| UniFaceGAN | 24.40 | 0.82 | 0.12 | (0.21, 0.25, 0.12) | - |\n")
  parsed = json.loads(document)
  assert [c["key"] for c in parsed["columns"]] == ["fid", "ssim", "e_id", "e_pose", "e_exp"]
  assert [c["higher_is_better"] for c in parsed["columns"]] == [False, True, False, False, False]
  assert parsed["rows"][0] == {"method": "FSGAN", "fid": 45.9, "ssim": None, "e_id": 0.89,
                               "e_pose": [2.27, 3.21, 0.76], "e_exp": 3.23}
  assert parsed["rows"][1]["e_exp"] is None
  markdown, _ = metrics.results_table({"TFVGAN": {"fid": 34.1, "e_tmp": 3.54}}, columns=("fid", "e_tmp"), decimals=1)
  assert markdown.splitlines()[2] == "| TFVGAN | 34.1 | 3.5 |"
  # Values below the rounding keep three significant digits; exact zeros stay 0.00.
  markdown, _ = metrics.results_table({"ours": {"e_tmp": 0.00015857, "ssim": 0.0, "e_pose": (0.004, 1.0, 0.0)}},
                                      columns=("ssim", "e_pose", "e_tmp"))
  assert markdown.splitlines()[2] == "| ours | 0.00 | (0.004, 1.00, 0.00) | 0.000159 |"
  with pytest.raises(ValueError, match="unknown metrics"):
    metrics.results_table({"x": {"fdi": 1.0}})
  with pytest.raises(ValueError, match="unknown column"):
    metrics.results_table({}, columns=("psnr",))


def test_frechet_distance_retries_with_an_offset_when_the_root_fails(monkeypatch):
  """A failed first root (non-finite) makes the distance use (sigma + eps I) for both covariances."""
  calls = []
  real_sqrtm = scipy.linalg.sqrtm

  def failing_once(matrix):
    calls.append(matrix)
    return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

  monkeypatch.setattr(scipy.linalg, "sqrtm", failing_once)
  rng = np.random.default_rng(23)
  mu1, mu2 = rng.normal(size=(2, 4))
  sigma1, sigma2 = random_spd(4, rng, rank=2), random_spd(4, rng, rank=2)
  got = metrics.frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-2)
  assert len(calls) == 2
  offset = 1e-2 * np.eye(4)
  # The traces keep the original covariances; only the root's trace sees the offset.
  root_trace = (np.trace(sigma1 + offset) + np.trace(sigma2 + offset) - frechet_distance_by_eigenvalues(
      mu1, sigma1 + offset, mu1, sigma2 + offset)) / 2
  want = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * root_trace
  assert got == pytest.approx(want, rel=1e-8)


# ONNX feature networks (tiny models built here with onnx.helper; nothing is downloaded).


def conv_pool_model(path, weights, bias, size=("H", "W")):
  """NCHW images -> Conv (valid, stride 1) -> GlobalAveragePool: [N, C_out, 1, 1]."""
  from onnx import helper
  nodes = [helper.make_node("Conv", ["images", "weights", "bias"], ["conv"]),
           helper.make_node("GlobalAveragePool", ["conv"], ["features"])]
  return save_onnx_model(path, nodes, ["N", 3, *size], ["N", weights.shape[0], 1, 1],
                         [("weights", weights), ("bias", bias)])


def test_onnx_conv_model_matches_numpy(tmp_path):
  rng = np.random.default_rng(24)
  weights = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
  bias = rng.normal(size=4).astype(np.float32)
  model = onnx_models.OnnxModel(conv_pool_model(tmp_path / "conv.onnx", weights, bias, size=(8, 8)),
                                input_size=(8, 8), scale=1 / 127.5, offset=-1.0)
  images = rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
  x = (images.astype(np.float64) - 127.5) / 127.5
  # Valid cross-correlation, one output position at a time, then the mean over positions.
  want = np.zeros((5, 4))
  for i in range(6):
    for j in range(6):
      want += np.einsum("nhwc,ochw->no", x[:, i:i + 3, j:j + 3], weights) + bias
  want /= 36
  np.testing.assert_allclose(model(images), want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(model(images, batch_size=2), want, rtol=1e-4, atol=1e-5)


def test_onnx_nhwc_matmul_model_matches_numpy_and_resizes(tmp_path):
  from onnx import helper
  rng = np.random.default_rng(25)
  weights = rng.normal(size=(6 * 5 * 3, 7)).astype(np.float32)
  nodes = [helper.make_node("Reshape", ["images", "shape"], ["flat"]),
           helper.make_node("MatMul", ["flat", "weights"], ["features"])]
  path = save_onnx_model(tmp_path / "matmul.onnx", nodes, ["N", 6, 5, 3], ["N", 7],
                         [("shape", np.asarray([-1, 90], np.int64)), ("weights", weights)])
  model = onnx_models.OnnxModel(path, input_size=(6, 5), layout="NHWC", scale=1 / 255, offset=0.0)
  images = rng.integers(0, 256, size=(3, 6, 5, 3), dtype=np.uint8)
  want = (images.reshape(3, -1).astype(np.float64) / 255) @ weights
  np.testing.assert_allclose(model(images), want, rtol=1e-4, atol=1e-4)
  # Other sizes are resized first; a constant image stays constant under bilinear resizing.
  constant = np.full((2, 17, 11, 3), [10, 100, 250], np.uint8)
  want = np.tile(np.asarray([10, 100, 250]) / 255, 30) @ weights
  np.testing.assert_allclose(model(constant), np.stack([want, want]), rtol=1e-4, atol=1e-4)


def test_onnx_presets_normalise_as_documented(tmp_path):
  from onnx import helper
  path = save_onnx_model(tmp_path / "pool.onnx", [helper.make_node("GlobalAveragePool", ["images"], ["features"])],
                         ["N", 3, "H", "W"], ["N", 3, 1, 1])
  constant = np.full((1, 40, 30, 3), [0, 51, 255], np.uint8)
  arcface = onnx_models.face_recognition_network(path)
  assert arcface.input_size == (112, 112) and arcface.layout == "NCHW"
  np.testing.assert_allclose(arcface(constant), [[-1.0, (51 - 127.5) / 127.5, 1.0]], atol=1e-4)
  inception = onnx_models.inception_network(path)
  assert inception.input_size == (299, 299) and inception.layout == "NCHW"
  np.testing.assert_allclose(inception(constant), [[0.0, 0.2, 1.0]], atol=1e-4)


def test_onnx_model_errors_name_the_file(tmp_path):
  from onnx import helper
  missing = tmp_path / "missing.onnx"
  with pytest.raises(FileNotFoundError, match="missing.onnx"):
    onnx_models.OnnxModel(missing)
  text = tmp_path / "notes.onnx"
  text.write_text("not a model")
  with pytest.raises(ValueError, match="notes.onnx: not a loadable ONNX model"):
    onnx_models.OnnxModel(text)
  flat = save_onnx_model(tmp_path / "flat.onnx", [helper.make_node("Identity", ["images"], ["features"])],
                         ["N", 12], ["N", 12])
  with pytest.raises(ValueError, match="flat.onnx: input 'images' has rank 2"):
    onnx_models.OnnxModel(flat)
  rng = np.random.default_rng(26)
  fixed = conv_pool_model(tmp_path / "fixed.onnx", rng.normal(size=(2, 3, 3, 3)).astype(np.float32),
                          np.zeros(2, np.float32), size=(8, 8))
  with pytest.raises(ValueError, match="fixed.onnx: .*does not fit input_size"):
    onnx_models.OnnxModel(fixed, input_size=(16, 16))
  with pytest.raises(ValueError, match="fixed.onnx: .*does not fit"):
    onnx_models.OnnxModel(fixed, input_size=(8, 8), layout="NHWC")
  model = onnx_models.OnnxModel(fixed, input_size=(8, 8))
  with pytest.raises(ValueError, match="fixed.onnx: expected uint8"):
    model(np.zeros((1, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match="fixed.onnx: expected uint8"):
    model(np.zeros((8, 8, 3), np.uint8))
