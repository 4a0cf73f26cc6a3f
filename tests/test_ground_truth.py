"""Ground truth of the editing tasks on synthetic videos, and the metrics that read it."""

import numpy as np
import pytest

from tfvgan_jax import evaluate, face3d, inference, metrics
from tfvgan_jax.data import ground_truth, sampling, synthetic

SIZE, VIDEOS, FRAMES = 32, 3, 2


@pytest.fixture(scope="module")
def model():
  return face3d.procedural_model(detail="low")


@pytest.fixture(scope="module")
def videos(model):
  return ground_truth.held_out_videos(model, seed=11, num_videos=VIDEOS, num_frames=FRAMES, size=SIZE)


@pytest.fixture(scope="module")
def samples(model, videos):
  return {task.name: ground_truth.task_samples(model, videos, task, FRAMES, SIZE) for task in ground_truth.TASKS}


def test_self_reenactment_truth_is_the_videos_own_frames(samples, videos):
  own = np.concatenate([video.frames[1:FRAMES + 1] for video in videos])
  task = samples["self_reenactment"]
  np.testing.assert_array_equal(task.truth, own)
  assert task.identity_reference is None and task.expression_reference is None
  assert task.truth_coverage.shape == (VIDEOS * FRAMES, SIZE, SIZE)
  assert 0.05 < task.truth_coverage.mean() < 0.9 and task.truth_coverage.min() == 0 and task.truth_coverage.max() == 1


def test_truth_takes_each_role_from_its_video(model, samples, videos):
  swap, cross, disentangled = samples["swap"], samples["cross_reenactment"], samples["disentangled"]
  # Swap and cross-identity reenactment ask for the same face; the reenactment is pasted into the
  # source's frame (its hint shows the source's background), so its light and background are A's.
  a, e, p = videos[1].truth, videos[0].truth, videos[0].truth
  expected = synthetic.render_frames(model, a.appearance, a.id_coeffs, e.exp_coeffs[1:2], p.cameras[1:2], SIZE)
  np.testing.assert_array_equal(cross.truth[0], expected[0])
  np.testing.assert_array_equal(cross.truth_coverage, swap.truth_coverage)
  assert not np.array_equal(cross.truth[0], swap.truth[0])
  # Its target-identity frame: P's identity and skin in A's light and background.
  look = a.appearance._replace(tint=p.appearance.tint)
  expected = synthetic.render_frames(model, look, p.id_coeffs, e.exp_coeffs[1:2], p.cameras[1:2], SIZE)
  np.testing.assert_array_equal(cross.identity_reference[0], expected[0])
  # The target-identity frame of a swap (P's identity, E = P) is P's own frame.
  np.testing.assert_array_equal(swap.identity_reference, samples["self_reenactment"].truth)
  assert swap.expression_reference is None
  # Disentangled with P's expression is the swap's truth.
  np.testing.assert_array_equal(disentangled.expression_reference, swap.truth)
  # Independently: video 0's disentangled truth at t = 1 from the renderer with the recombined look.
  a, e, p = videos[1].truth, videos[2].truth, videos[0].truth
  look = synthetic.Appearance(a.appearance.tint, p.appearance.light, p.appearance.ambient, p.appearance.background)
  expected = synthetic.render_frames(model, look, a.id_coeffs, e.exp_coeffs[1:2], p.cameras[1:2], SIZE)
  np.testing.assert_array_equal(disentangled.truth[0], expected[0])
  assert not np.array_equal(disentangled.truth[0], swap.truth[0])


def test_batch_fills_the_roles_as_editing_does(samples, videos):
  batch = samples["disentangled"].batch
  assert set(batch) == {f"{role}_{time}" for role in sampling.ROLES for time in sampling.TIMES} | {"branch"}
  np.testing.assert_array_equal(batch["branch"], sampling.INTER)
  np.testing.assert_array_equal(samples["cross_reenactment"].batch["branch"], sampling.INTRA)
  # Sample 1 is frame t = 2 of P = video 0, identity = frame 0 of video 1, expression = video 2.
  np.testing.assert_array_equal(batch["identity_t"]["image"][1], videos[1].frames[0])
  np.testing.assert_array_equal(batch["appearance_t"]["image"][1], videos[0].frames[2])
  np.testing.assert_array_equal(batch["appearance_prev"]["image"][1], videos[0].frames[1])
  np.testing.assert_array_equal(batch["expression_t"]["exp_coeffs"][1], videos[2].truth.exp_coeffs[2])
  assert set(batch["identity_t"]) == set(inference.STEP_FIELDS)


def test_too_few_videos_is_an_error(model, videos):
  with pytest.raises(ValueError, match="at least 3 held-out videos"):
    ground_truth.task_samples(model, videos[:2], ground_truth.TASKS[0], FRAMES, SIZE)


def test_margins_zero_at_the_truth_and_signed_by_closeness():
  rng = np.random.default_rng(0)
  truth = rng.uniform(size=(2, 8, 8, 3)).astype(np.float32)
  reference = truth.copy()
  coverage = np.zeros((2, 8, 8), np.float32)
  coverage[:, 2:6, 2:6] = 1.0
  # References that coincide: zero margin whatever Y is.
  np.testing.assert_allclose(evaluate.margin_per_sample(truth, truth, coverage, reference, coverage), 0.0, atol=1e-7)
  reference[:, 2:6, 2:6] += 0.2  # the reference differs on the face
  np.testing.assert_allclose(evaluate.margin_per_sample(truth, truth, coverage, reference, coverage), 0.04, rtol=1e-5)
  np.testing.assert_allclose(evaluate.margin_per_sample(reference, truth, coverage, reference, coverage), -0.04,
                             rtol=1e-5)
  # Off-face differences do not count.
  output = truth.copy()
  output[:, 0] = 1.0 - output[:, 0]
  np.testing.assert_allclose(evaluate.margin_per_sample(output, truth, coverage, reference, coverage), 0.04, rtol=1e-5)


def test_masked_psnr_and_ssim_against_direct_computation():
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.1, size=x.shape), 0, 1).astype(np.float32)
  mask = np.zeros((2, 16, 16), bool)
  mask[:, 4:12, 3:9] = True
  mse = np.array([np.mean((x[b][mask[b]] - y[b][mask[b]]) ** 2) for b in range(2)])
  np.testing.assert_allclose(metrics.psnr_per_sample(x, y, mask=mask), 10 * np.log10(1 / mse), rtol=1e-5)
  whole = np.mean((x - y) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(metrics.psnr_per_sample(x, y), 10 * np.log10(1 / whole), rtol=1e-5)
  # SSIM with an all-ones mask is the plain SSIM; with a mask, the map's mean over the masked centres
  # (window 5: centre of valid position i is pixel i + 2).
  np.testing.assert_allclose(metrics.ssim_per_sample(x, y, filter_size=5, mask=np.ones((2, 16, 16))),
                             metrics.ssim_per_sample(x, y, filter_size=5), rtol=1e-6)
  taps = np.exp(-np.square(np.arange(5) - 2.0) / (2 * 1.5 ** 2))
  window = np.outer(taps, taps) / np.sum(taps) ** 2
  patches = lambda a: np.lib.stride_tricks.sliding_window_view(a, (5, 5), axis=(1, 2))  # noqa: E731
  moment = lambda a: np.einsum("bijcuv,uv->bijc", patches(a), window)  # noqa: E731
  mu_x, mu_y = moment(x), moment(y)
  var_x, var_y, cov = moment(x * x) - mu_x ** 2, moment(y * y) - mu_y ** 2, moment(x * y) - mu_x * mu_y
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  ssim_maps = ((2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))).mean(-1)
  centres = mask[:, 2:14, 2:14]
  expected = [ssim_maps[b][centres[b]].mean() for b in range(2)]
  np.testing.assert_allclose(metrics.ssim_per_sample(x, y, filter_size=5, mask=mask), expected, rtol=1e-5)
