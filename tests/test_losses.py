"""tfvgan_jax.losses against hand computations on tiny arrays (eq. 6-8, 15, 18 / 8-10, 17, 18)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfvgan_jax import losses

# Eq. 18's weights (configs/voxceleb.py's).
EQ18_WEIGHTS = {"adv": 10.0, "app": 1.0, "rec": 10.0, "tmp": 5.0}

# Compiled once per region: op-by-op dispatch of the warp dominates the test time otherwise.
temporal_loss = jax.jit(losses.temporal_loss, static_argnames="region")


def patches(*values):
  """A [1, 1, n, 1] array of patch logits."""
  return jnp.asarray(values, jnp.float32).reshape(1, 1, -1, 1)


def const_images(values, size=4, channels=3):
  """[B, size, size, channels] with sample b filled by values[b]."""
  return jnp.broadcast_to(jnp.asarray(values, jnp.float32)[:, None, None, None], (len(values), size, size, channels))


# Adversarial.

REAL = [patches(0.5, 2.0, -1.0), jnp.asarray([[[[0.0], [3.0]], [[0.25], [1.0]]]])]
FAKE = [patches(-2.0, 0.0, 0.5), jnp.asarray([[[[-0.5], [1.0]], [[-3.0], [0.0]]]])]


def test_hinge_discriminator_loss():
  # Scale 0: relu(1 - real) = 0.5, 0, 2 -> 5/6; relu(1 + fake) = 0, 1, 1.5 -> 5/6.
  # Scale 1: relu(1 - real) = 1, 0, 0.75, 0 -> 0.4375; relu(1 + fake) = 0.5, 2, 0, 1 -> 0.875.
  expected = ((5 / 6 + 5 / 6) + (0.4375 + 0.875)) / 2
  np.testing.assert_allclose(losses.discriminator_hinge_loss(REAL, FAKE), expected, rtol=1e-6)


def test_hinge_generator_loss():
  # -mean(fake): scale 0 -> 0.5, scale 1 -> 0.625.
  np.testing.assert_allclose(losses.generator_hinge_loss(FAKE), (0.5 + 0.625) / 2, rtol=1e-6)


def log_sigmoid(x):
  return np.log(1.0 / (1.0 + np.exp(-np.asarray(x, np.float64))))


def test_non_saturating_losses_match_log_sigmoid():
  d_expected = np.mean([np.mean(-log_sigmoid(r)) + np.mean(-np.log(1.0 - np.exp(log_sigmoid(f)))) for r, f in zip(REAL, FAKE)])
  g_expected = np.mean([np.mean(-log_sigmoid(f)) for f in FAKE])
  d_loss, g_loss = losses.adversarial_losses("non_saturating")
  np.testing.assert_allclose(d_loss(REAL, FAKE), d_expected, rtol=1e-5)
  np.testing.assert_allclose(g_loss(FAKE), g_expected, rtol=1e-5)


def test_adversarial_registry():
  assert losses.adversarial_losses("hinge") == (losses.discriminator_hinge_loss, losses.generator_hinge_loss)
  with pytest.raises(ValueError, match="wasserstein"):
    losses.adversarial_losses("wasserstein")


def test_feature_matching_two_scales():
  real = [[jnp.zeros((1, 2, 2, 3)), jnp.full((1, 1, 1, 2), 2.0)], [jnp.ones((1, 2, 2, 1))]]
  fake = [[jnp.ones((1, 2, 2, 3)), jnp.zeros((1, 1, 1, 2))], [jnp.full((1, 2, 2, 1), 1.5)]]
  # Scale 0: layers 1 and 2 -> 1.5; scale 1: 0.5; mean over scales 1.0.
  np.testing.assert_allclose(losses.feature_matching_loss(real, fake), 1.0, rtol=1e-6)
  grad_real = jax.grad(lambda r: losses.feature_matching_loss(r, fake))(real)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(grad_real))


# Appearance and reconstruction.


def test_appearance_loss_per_sample_and_mean():
  output = jnp.asarray([[1.0, 2.0], [3.0, 4.0]])
  appearance = jnp.asarray([[0.0, 0.0], [3.0, 0.0]])
  np.testing.assert_allclose(losses.appearance_loss_per_sample(output, appearance), [1.5, 2.0])
  np.testing.assert_allclose(losses.appearance_loss(output, appearance), 1.75)
  np.testing.assert_allclose(losses.appearance_loss(output, appearance, jnp.asarray([0.0, 1.0])), 2.0)


def test_reconstruction_loss_over_enabled_samples_and_both_targets():
  output = const_images([0.0, 0.0, 0.0])
  x_appearance = const_images([0.5, 0.9, -0.25])
  x_identity = const_images([0.1, -0.7, 0.3])
  enabled = jnp.asarray([True, False, True])
  target = losses.reconstruction_target(x_identity, x_appearance, "appearance")
  np.testing.assert_allclose(losses.reconstruction_loss(output, target, enabled), (0.5 + 0.25) / 2, rtol=1e-6)
  target = losses.reconstruction_target(x_identity, x_appearance, "identity")
  np.testing.assert_allclose(losses.reconstruction_loss(output, target, enabled), (0.1 + 0.3) / 2, rtol=1e-6)
  assert float(losses.reconstruction_loss(output, target, jnp.zeros(3, bool))) == 0.0


def test_background_loss_is_the_l1_off_the_face_by_hand():
  rng = np.random.default_rng(0)
  appearance = rng.uniform(-1, 1, (3, 4, 4, 3)).astype(np.float32)
  mask = np.zeros((3, 4, 4, 1), np.float32)
  mask[:, 1:3, 1:3] = 1.0                                  # a 2 x 2 face in a 4 x 4 frame
  mask[2] = 1.0                                            # sample 2: the face covers the frame
  output = appearance.copy()
  output[0, 1:3, 1:3] += 0.7                               # sample 0 differs only on the face: 0
  output[1] += 0.2                                         # sample 1 differs by 0.2 everywhere
  output[1, 0, 0, 1] += 1.2                                # and by 1.4 at one pixel and channel off the face
  output[2] -= 0.5                                         # sample 2 has nothing off the face: 0
  expected = [0.0, (0.2 * (12 * 3 - 1) + 1.4) / (12 * 3), 0.0]
  np.testing.assert_allclose(losses.background_loss_per_sample(jnp.asarray(output), jnp.asarray(appearance),
                                                               jnp.asarray(mask)), expected, rtol=1e-5, atol=1e-7)
  # [B, H, W] masks read the same; the mean is over the enabled samples only.
  np.testing.assert_allclose(losses.background_loss(jnp.asarray(output), jnp.asarray(appearance),
                                                    jnp.asarray(mask[..., 0]), jnp.asarray([False, True, True])),
                             expected[1] / 2, rtol=1e-5)
  assert float(losses.background_loss(jnp.asarray(output), jnp.asarray(appearance), jnp.asarray(mask),
                                      jnp.zeros(3, bool))) == 0.0
  gradient = jax.grad(lambda y: losses.background_loss(y, jnp.asarray(appearance), jnp.asarray(mask),
                                                       jnp.asarray([1.0, 1.0, 1.0])))(jnp.asarray(output))
  assert np.all(np.isfinite(gradient)) and np.all(np.asarray(gradient)[:, 1:3, 1:3] == 0.0)


def test_reconstruction_target_rejects_unknown():
  with pytest.raises(ValueError, match="expression"):
    losses.reconstruction_target(const_images([0.0]), const_images([0.0]), "expression")


# Temporal.

# One channel, 2 x 2: frame t-1 holds 0..3; frame t is zero. The flow points one pixel right at
# (row 0, col 0) only; the face covers row 0, and only (0, 0) is valid.
PREV = jnp.asarray([[[0.0], [1.0]], [[2.0], [3.0]]])[None]
CURR = jnp.zeros_like(PREV)
FLOW = jnp.zeros((1, 2, 2, 2)).at[0, 0, 0, 0].set(1.0)
VALID = jnp.asarray([[[True, False], [False, False]]])
FACE = jnp.asarray([[[1.0], [1.0]], [[0.0], [0.0]]])[None]


def test_temporal_zero_motion_identical_frames_is_zero():
  frames = jax.random.uniform(jax.random.PRNGKey(0), (1, 2, 2, 1), minval=-1, maxval=1)
  for region in losses.TMP_REGIONS:
    assert float(temporal_loss(frames, frames, jnp.zeros_like(FLOW), VALID, FACE, region, jnp.ones(1))) == 0.0


def test_temporal_translation_with_matching_flow_is_zero_and_wrong_flow_is_the_plain_difference():
  dx, dy, size = 2, -1, 8
  prev = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (1, size, size, 3), minval=-1, maxval=1))
  # Frame t at (i, j) shows what frame t-1 showed at (i + dy, j + dx).
  rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  inside = (rows + dy >= 0) & (rows + dy < size) & (cols + dx >= 0) & (cols + dx < size)
  curr = np.zeros_like(prev)
  curr[0][inside] = prev[0, rows[inside] + dy, cols[inside] + dx]
  flow = np.broadcast_to(np.asarray([dx, dy], np.float32), (1, size, size, 2))
  valid = inside[None]
  face = np.ones((1, size, size), bool)
  loss = temporal_loss(curr, prev, flow, valid, face, "face", None)
  assert float(loss) < 1e-10
  expected = np.mean((curr[0][inside] - prev[0][inside]) ** 2)
  wrong = temporal_loss(curr, prev, np.zeros_like(flow), valid, face, "face", None)
  np.testing.assert_allclose(wrong, expected, rtol=1e-5)


def test_temporal_face_and_frame_regions():
  # 'face': (0, 0) only, which reads t-1 at (0, 1) = 1 -> 1.
  # 'frame': (0, 0) and the background row, which reads t-1 in place: (1 + 4 + 9) / 3.
  face = temporal_loss(CURR, PREV, FLOW, VALID, FACE, "face", jnp.ones(1))
  frame = temporal_loss(CURR, PREV, FLOW, VALID, FACE, "frame", jnp.ones(1))
  np.testing.assert_allclose(face, 1.0, rtol=1e-6)
  np.testing.assert_allclose(frame, 14 / 3, rtol=1e-6)
  np.testing.assert_array_equal(losses.temporal_mask(VALID, FACE, "frame"), [[[True, False], [True, True]]])
  with pytest.raises(ValueError, match="background"):
    losses.temporal_mask(VALID, FACE, "background")


def test_temporal_border_reads_the_nearest_pixel():
  # The flow points one right everywhere: column 1 reads past the border, so both columns read column 1.
  flow = jnp.zeros((1, 2, 2, 2)).at[..., 0].set(1.0)
  loss = temporal_loss(CURR, PREV, flow, jnp.ones((1, 2, 2), bool), FACE, "face", None)
  np.testing.assert_allclose(loss, (1 + 1 + 9 + 9) / 4, rtol=1e-6)


def test_temporal_disabled_samples_contribute_nothing():
  garbage = jnp.full_like(PREV, 7.0)
  pairs = [(CURR, garbage), (PREV, -garbage), (FLOW, FLOW), (VALID, jnp.ones_like(VALID)), (FACE, FACE)]
  curr, prev, flow, valid, face = (jnp.concatenate(pair) for pair in pairs)
  loss = temporal_loss(curr, prev, flow, valid, face, "frame", jnp.asarray([1.0, 0.0]))
  np.testing.assert_allclose(loss, 14 / 3, rtol=1e-6)
  none = temporal_loss(CURR, PREV, FLOW, VALID, FACE, "frame", jnp.zeros(1))
  assert float(none) == 0.0
  empty = temporal_loss(CURR, PREV, FLOW, jnp.zeros_like(VALID), jnp.ones_like(FACE), "frame", jnp.ones(1))
  assert float(empty) == 0.0


# Total.


def test_weighted_sum_default_weights():
  total, terms = losses.weighted_sum({"adv": 0.5, "app": 2.0, "rec": 0.1, "tmp": 0.2}, EQ18_WEIGHTS)
  np.testing.assert_allclose(total, 5.0 + 2.0 + 1.0 + 1.0, rtol=1e-6)
  assert sorted(terms) == ["adv", "app", "rec", "tmp"]
  np.testing.assert_allclose(terms["rec"], 1.0, rtol=1e-6)


def test_weighted_sum_names_the_mismatch():
  with pytest.raises(KeyError, match="tmp"):
    losses.weighted_sum({"adv": 1.0, "app": 1.0, "rec": 1.0}, EQ18_WEIGHTS)
  with pytest.raises(KeyError, match="fm"):
    losses.weighted_sum({"adv": 1.0, "app": 1.0, "rec": 1.0, "tmp": 1.0, "fm": 1.0}, EQ18_WEIGHTS)


# Gradients and jit.


@pytest.mark.slow
def test_everything_finite_under_grad_and_jit():
  key = jax.random.split(jax.random.PRNGKey(2), 4)
  output = jax.random.uniform(key[0], (2, 6, 6, 3), minval=-1, maxval=1)
  other = jax.random.uniform(key[1], (2, 6, 6, 3), minval=-1, maxval=1)
  flow = 1.5 * jax.random.normal(key[2], (2, 6, 6, 2))
  valid = jax.random.bernoulli(key[3], 0.5, (2, 6, 6))
  face = jnp.ones((2, 6, 6, 1))
  d_loss, g_loss = losses.adversarial_losses("hinge")

  def total(y, weight, valid):
    logits = [y[..., :1], y[:, ::2, ::2, :1]]
    feats = [[y, 2 * y], [y[:, ::2, ::2]]]
    terms = {
        "adv": g_loss(logits) + d_loss([other[..., :1], other[:, ::2, ::2, :1]], logits),
        "app": losses.appearance_loss(y, other, weight),
        "rec": losses.reconstruction_loss(y, losses.reconstruction_target(other, other, "appearance"), weight),
        "tmp": temporal_loss(y, other, flow, valid, face, "frame", weight)
               + temporal_loss(y, y[::-1], flow, valid, face, "face", weight),
        "fm": losses.feature_matching_loss([[other, other], [other[:, ::2, ::2]]], feats),
    }
    return losses.weighted_sum(terms, {**EQ18_WEIGHTS, "fm": 1.0})[0]

  value_and_grad = jax.jit(jax.value_and_grad(total))
  flow_grad = jax.jit(jax.grad(lambda f, weight, mask: losses.temporal_loss(output, other, f, mask, face, "face", weight)))
  for weight, mask in [(jnp.asarray([1.0, 0.0]), valid), (jnp.zeros(2), valid), (jnp.ones(2), jnp.zeros_like(valid))]:
    value, grad = value_and_grad(output, weight, mask)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.isfinite(np.asarray(flow_grad(flow, weight, mask))))
  value, _ = value_and_grad(output, jnp.ones(2), valid)
  assert float(value) > 0
