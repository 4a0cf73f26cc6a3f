"""Shapes, exact parameter counts, RCN against a NumPy reference, and differentiability of E, G, D."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from tfvgan_jax.models import generator as generator_module
from tfvgan_jax.models import (
    NORMS,
    AdaptiveInstanceNorm,
    Generator,
    InstanceNorm,
    RegionAwareNorm,
    SpatiallyAdaptiveNorm,
    build_models,
    make_norm,
)


def tiny_config(image_size=32, **overrides):
  config = ml_collections.ConfigDict(dict(
      image_size=image_size,
      emb_width=4, emb_downsamples=2,
      gen_width=4, gen_downsamples=2, gen_res_blocks=1,
      norm='rcn', attention=True,
      disc_width=4, disc_layers=2, disc_scales=3,
      spectral_norm=True, disc_conditional=True, max_width=16,
  ))
  config.update(overrides)
  return config


def inputs(image_size, batch=2, seed=0):
  """Render R, appearance X_p, hint M in [-1, 1] and a square face mask M^."""
  keys = jax.random.split(jax.random.key(seed), 3)
  render, appearance, hint = (jax.random.uniform(k, (batch, image_size, image_size, 3), minval=-1, maxval=1) for k in keys)
  quarter = image_size // 4
  mask = jnp.zeros((batch, image_size, image_size, 1)).at[:, quarter:3 * quarter, quarter:3 * quarter].set(1.0)
  return render, appearance, hint, mask


def count_params(module):
  return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def conv_params(kernel, cin, cout):
  return kernel * kernel * cin * cout + cout


@nnx.jit
def forward(models, render, appearance, hint, mask):
  embedder, generator, discriminator = models
  p = embedder(appearance, hint)
  y = generator(render, p, mask)
  return p, y, discriminator(y, render)


@pytest.mark.slow
@pytest.mark.parametrize('image_size', [32, 64])
def test_output_shapes(image_size):
  models = build_models(tiny_config(image_size), nnx.Rngs(0))
  render, appearance, hint, mask = inputs(image_size)
  p, y, scales = forward(models, render, appearance, hint, mask)
  assert p.shape == (2, image_size // 4, image_size // 4, 16)
  assert y.shape == (2, image_size, image_size, 3)
  assert len(scales) == 3
  for scale, (features, logits) in enumerate(scales):
    side = image_size // 2**scale
    assert [f.shape for f in features] == [(2, side // 2, side // 2, 4), (2, side // 4, side // 4, 8)]
    assert logits.shape == (2, side // 4, side // 4, 1)


def test_parameter_counts():
  embedder, generator, discriminator = build_models(tiny_config(32), nnx.Rngs(0))
  # E: 7x7 conv 6->4, 4x4 convs 4->8->16.
  assert count_params(embedder) == conv_params(7, 6, 4) + conv_params(4, 4, 8) + conv_params(4, 8, 16) == 3764
  # G: widths 4, 8, 16; RCN = 1x1 projection from P's 16 channels + alpha + beta; attention on the
  # 8x8 bottleneck (32 / 4) with 16 channels: query and key 16->2, value 16->16, gamma.
  rcn = lambda c: conv_params(1, 16, c) + 2 * c
  attention = 2 * conv_params(1, 16, 2) + conv_params(1, 16, 16) + 1
  expected_g = (
      conv_params(7, 3, 4) + conv_params(3, 4, 8) + conv_params(3, 8, 16)
      + 2 * conv_params(3, 16, 16)
      + conv_params(3, 16, 8) + rcn(8) + conv_params(3, 8, 4) + rcn(4)
      + conv_params(7, 4, 3) + attention)
  assert count_params(generator) == expected_g == 9308
  # D: 3 scales of 4x4 convs (6 -> 4 -> 8) and 4x4 logits 8 -> 1.
  assert count_params(discriminator) == 3 * (conv_params(4, 6, 4) + conv_params(4, 4, 8) + conv_params(4, 8, 1)) == 3111


def test_hint_skips_add_the_hint_to_each_decoder_stage():
  plain = build_models(tiny_config(32), nnx.Rngs(0)).generator
  skips = build_models(tiny_config(32, gen_skips='hint'), nnx.Rngs(0)).generator
  # Three more input channels in each decoder conv (3x3: 16+3 -> 8, 8+3 -> 4) and the 7x7 output conv.
  assert count_params(skips) - count_params(plain) == 3 * (9 * 8 + 9 * 4 + 49 * 3)
  render, _, hint, mask = inputs(32)
  p = jnp.ones((2, 8, 8, 16))
  run = nnx.jit(lambda g, r, q, m, h: g(r, q, m, h))
  # One hint pixel reaches the output around it through the full-resolution path; far from it only
  # the global statistics (instance and conditional norms, attention) move, by far less: the skip
  # brings the hint's detail at the output's resolution.
  changed = hint.at[:, 5, 6].set(-hint[:, 5, 6])
  difference = np.abs(np.asarray(run(skips, render, p, mask, changed) - run(skips, render, p, mask, hint)))
  near, far = difference[:, 2:9, 3:10].max(axis=(1, 2, 3)), difference[:, 20:, 20:].max(axis=(1, 2, 3))
  assert np.all(near > 1e-3) and np.all(near > 20 * far), (near, far)
  # The papers' generator ignores a hint, and one with skips refuses to run without it.
  np.testing.assert_array_equal(np.asarray(run(plain, render, p, mask, hint)), np.asarray(run(plain, render, p, mask, changed)))
  with pytest.raises(ValueError, match="needs the hint image"):
    skips(render, p, mask)
  with pytest.raises(ValueError, match=r"model.gen_skips='unet'.*'none', 'hint', 'encoder', 'both'"):
    build_models(tiny_config(32, gen_skips='unet'), nnx.Rngs(0))


def test_residual_over_scene_by_hand():
  """Y = tanh(artanh(R + M) + correction), worked by hand on one pixel of each kind."""
  # Pixel 0: on the face (R textured, M 0); pixel 1: off the face (R 0, M the kept frame);
  # pixel 2: on the face where R has no texture (both 0); pixel 3: a white pixel of the frame.
  render = jnp.array([[0.2, -0.4, 0.6], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).reshape(1, 1, 4, 3)
  hint = jnp.array([[0.0, 0.0, 0.0], [-0.8, 0.1, 0.3], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]).reshape(1, 1, 4, 3)
  none = np.asarray(generator_module.residual_over_scene(jnp.zeros((1, 1, 4, 3)), render, hint))[0, 0]
  np.testing.assert_allclose(none[:3], [[0.2, -0.4, 0.6], [-0.8, 0.1, 0.3], [0.0, 0.0, 0.0]], atol=1e-6)
  np.testing.assert_allclose(none[3], 1.0 - 1e-3, atol=1e-6)
  correction = jnp.full((1, 1, 4, 3), 0.5)
  y = np.asarray(generator_module.residual_over_scene(correction, render, hint))[0, 0]
  np.testing.assert_allclose(y[2], np.tanh(0.5), rtol=1e-6)
  np.testing.assert_allclose(y[0], np.tanh(np.arctanh([0.2, -0.4, 0.6]) + 0.5), rtol=1e-5)
  # Every pixel passes gradient back to the correction, the white one included.
  grad = jax.grad(lambda c: jnp.sum(generator_module.residual_over_scene(c, render, hint)))(correction)
  assert np.all(np.asarray(grad) > 1e-4)


def test_residual_output_corrects_the_scene():
  plain = build_models(tiny_config(32, gen_skips='both'), nnx.Rngs(0)).generator
  residual = build_models(tiny_config(32, gen_skips='both', gen_output='residual'), nnx.Rngs(0)).generator
  assert count_params(residual) == count_params(plain)  # the same head, read another way
  render, _, hint, mask = inputs(32)
  render = render * mask * 0.9  # R is 0 off the face, M 0 on it.
  hint = hint * (1 - mask) * 0.9
  p = jnp.ones((2, 8, 8, 16))
  run = nnx.jit(lambda g, r, q, m, h: g(r, q, m, h))
  y = np.asarray(run(residual, render, p, mask, hint))
  assert y.shape == (2, 32, 32, 3) and np.all(np.abs(y) < 1.0)
  # The head starts at 0, so a fresh G returns the scene R + M pixel for pixel; the papers' head
  # keeps its random init.
  np.testing.assert_allclose(y, np.asarray(render + hint), atol=1e-5)
  assert not np.any(np.asarray(residual.head.kernel[...])) and np.any(np.asarray(plain.head.kernel[...]))
  # The zero head still learns: its gradient is not 0, and once it moves, so does Y.
  grads = nnx.grad(lambda g: jnp.sum(jnp.square(g(render, p, mask, hint) - 0.3)))(residual)
  assert np.abs(np.asarray(grads.head.kernel[...])).max() > 1e-3
  residual.head.kernel[...] = residual.head.kernel[...] - 0.1 * grads.head.kernel[...]
  assert np.abs(np.asarray(run(residual, render, p, mask, hint)) - y).max() > 1e-3
  # Correcting the scene needs the hint even where G's decoder takes none.
  alone = build_models(tiny_config(32, gen_output='residual'), nnx.Rngs(0)).generator
  with pytest.raises(ValueError, match=r"gen_output='residual'.*needs the hint image"):
    alone(render, p, mask)
  with pytest.raises(ValueError, match=r"model.gen_output='blend'.*'image', 'residual'"):
    build_models(tiny_config(32, gen_output='blend'), nnx.Rngs(0))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_hint_convs_padded_to_eight_channels_compute_the_same_function(dtype):
  """The decoder convs that take the hint (odd input channels) run zero-padded to a multiple of 8
  channels at call time: same parameters and, up to rounding, the same output and gradients as
  the plain conv of the concatenated inputs."""
  conv = nnx.Conv(16 + 3, 8, (3, 3), rngs=nnx.Rngs(1), dtype=dtype)
  x = jax.random.normal(jax.random.key(2), (2, 12, 12, 19))
  tolerance = 1e-5 if dtype == jnp.float32 else 3e-2
  np.testing.assert_allclose(np.asarray(generator_module._conv_padded(conv, x), np.float32),
                             np.asarray(conv(x), np.float32), atol=tolerance, rtol=tolerance)
  grads = [nnx.grad(lambda c: jnp.sum(f(c, x).astype(jnp.float32) ** 2))(conv)
           for f in (generator_module._conv_padded, lambda c, v: c(v))]
  for padded, plain in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    assert padded.shape == plain.shape
    np.testing.assert_allclose(np.asarray(padded, np.float32), np.asarray(plain, np.float32),
                               atol=tolerance * 50, rtol=tolerance * 5)
  aligned = nnx.Conv(16, 8, (3, 3), rngs=nnx.Rngs(1))
  np.testing.assert_array_equal(np.asarray(generator_module._conv_padded(aligned, x[..., :16])),
                                np.asarray(aligned(x[..., :16])))


def test_encoder_skips_carry_the_render_past_the_bottleneck():
  plain = build_models(tiny_config(32), nnx.Rngs(0)).generator
  encoder = build_models(tiny_config(32, gen_skips='encoder'), nnx.Rngs(0)).generator
  both = build_models(tiny_config(32, gen_skips='both'), nnx.Rngs(0)).generator
  # The first decoder conv (3x3 -> 8) takes the 8-channel 16 px encoder map, the second (-> 4) the
  # 4-channel 32 px one.
  assert count_params(encoder) - count_params(plain) == 9 * 8 * 8 + 9 * 4 * 4
  assert count_params(both) - count_params(plain) == 9 * 8 * 8 + 9 * 4 * 4 + 3 * (9 * 8 + 9 * 4 + 49 * 3)
  render, _, hint, mask = inputs(32)
  p = jnp.ones((2, 8, 8, 16))
  run = nnx.jit(lambda g, r, q, m, h: g(r, q, m, h))

  def locality(generator):
    changed = render.at[:, 5, 6].set(-render[:, 5, 6])
    difference = np.abs(np.asarray(run(generator, changed, p, mask, hint) - run(generator, render, p, mask, hint)))
    return difference[:, 2:9, 3:10].max(axis=(1, 2, 3)), difference[:, 20:, 20:].max(axis=(1, 2, 3))

  # One render pixel moves the output near it far more than elsewhere (where only the encoder's
  # instance-norm statistics carry it); without skips it reaches the output only through the 8 px
  # bottleneck, and its local effect is not much above the rest.
  near, far = locality(encoder)
  plain_near, plain_far = locality(plain)
  assert np.all(near > 1e-3) and np.all(near / far > 2.5 * plain_near / plain_far), (near, far, plain_near, plain_far)
  assert run(both, render, p, mask, hint).shape == (2, 32, 32, 3)


def numpy_rcn(u, t, h, a, b, eps=1e-5):
  """DESIGN.md choice 3 in NumPy, after batch norm (batch statistics, no affine)."""
  def batch_norm(x):
    return (x - x.mean(axis=(0, 1, 2))) / np.sqrt(x.var(axis=(0, 1, 2)) + eps)

  def moments(x, region):
    w = region.sum(axis=(1, 2), keepdims=True) + eps
    mean = (region * x).sum(axis=(1, 2), keepdims=True) / w
    var = (region * (x - mean) ** 2).sum(axis=(1, 2), keepdims=True) / w
    return mean, np.sqrt(var + eps)

  def transfer(x, region_x, y, region_y):
    mx, sx = moments(x, region_x)
    my, sy = moments(y, region_y)
    return (x - mx) / sx * sy + my

  u, t = batch_norm(u), batch_norm(t)
  hb = 1 - h
  return h * (a * transfer(u, h, t, hb) + (1 - a) * u) + hb * (b * transfer(t, hb, u, h) + (1 - b) * t)


def identity_projection_rcn(channels):
  layer = RegionAwareNorm(channels, channels, rngs=nnx.Rngs(0))
  layer.project.kernel[...] = jnp.eye(channels)[None, None]
  return layer


@pytest.mark.parametrize('weights', ['init', 'other'])
def test_rcn_matches_numpy(weights):
  rng = np.random.default_rng(0)
  channels = 5
  u = rng.normal(1.0, 2.0, (3, 8, 8, channels)).astype(np.float32)
  t = rng.normal(-0.5, 0.7, (3, 8, 8, channels)).astype(np.float32)
  h = (rng.uniform(size=(3, 8, 8, 1)) < 0.4).astype(np.float32)
  h[:, 0, 0], h[:, 0, 1] = 1.0, 0.0
  layer = identity_projection_rcn(channels)
  if weights == 'init':
    a, b = np.full(channels, 0.8), np.full(channels, 0.1)
  else:
    a, b = rng.uniform(size=channels), rng.uniform(size=channels)
    layer.alpha_logit[...] = jnp.log(a / (1 - a))
    layer.beta_logit[...] = jnp.log(b / (1 - b))
  np.testing.assert_allclose(np.asarray(layer.mixing_weights()[0]), a, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(layer(u, t, h)), numpy_rcn(u, t, h, a, b), rtol=1e-4, atol=1e-4)


def test_rcn_mixing_weights_stay_in_unit_interval():
  layer = identity_projection_rcn(4)
  optimizer = nnx.Optimizer(layer, optax.sgd(1e5), wrt=nnx.Param)
  u, t = jax.random.normal(jax.random.key(1), (2, 2, 6, 6, 4))
  h = jnp.zeros((2, 6, 6, 1)).at[:, :3].set(1.0)

  def loss(layer):
    # Any loss will do: with a learning rate of 1e5 one step moves the logits far past where a
    # plain parameter would leave [0, 1].
    out = layer(u, t, h)
    return -jnp.sum(out[..., :2] * jnp.sign(out[..., :2])) + jnp.sum(out[..., 2:] ** 2)

  @nnx.jit
  def step(layer, optimizer):
    optimizer.update(layer, nnx.grad(loss)(layer))

  before = layer.mixing_weights()
  for _ in range(3):
    step(layer, optimizer)
  after = layer.mixing_weights()
  assert any(not np.allclose(x, y) for x, y in zip(before, after))
  for w in after:
    assert np.all((np.asarray(w) >= 0) & (np.asarray(w) <= 1))


@pytest.mark.parametrize('name, cls', [
    ('rcn', RegionAwareNorm), ('adain', AdaptiveInstanceNorm),
    ('spade', SpatiallyAdaptiveNorm), ('instance', InstanceNorm)])
@pytest.mark.slow
def test_norms_selectable_by_name(name, cls):
  assert NORMS[name] is cls
  generator = Generator(32, 16, width=4, downsamples=2, res_blocks=1, norm=name, attention=False, rngs=nnx.Rngs(0))
  assert all(isinstance(norm, cls) for norm in generator.up_norms)
  render, _, _, mask = inputs(32)
  y = nnx.jit(lambda g, r, p, m: g(r, p, m))(generator, render, jnp.ones((2, 8, 8, 16)), mask)
  assert y.shape == (2, 32, 32, 3)


def test_unknown_norm_is_a_clear_error():
  with pytest.raises(ValueError, match=r"unknown norm 'batch'.*'adain'.*'instance'.*'rcn'.*'spade'"):
    make_norm('batch', 4, 4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='unknown norm'):
    build_models(tiny_config(norm='batch'), nnx.Rngs(0))


def test_adain_and_instance_against_numpy():
  rng = np.random.default_rng(2)
  u = rng.normal(2.0, 3.0, (2, 6, 6, 3)).astype(np.float32)
  t = rng.normal(-1.0, 0.5, (2, 6, 6, 3)).astype(np.float32)
  h = np.ones((2, 6, 6, 1), np.float32)
  normalized = (u - u.mean(axis=(1, 2), keepdims=True)) / np.sqrt(u.var(axis=(1, 2), keepdims=True) + 1e-5)
  np.testing.assert_allclose(np.asarray(make_norm('instance', 3, 3, rngs=nnx.Rngs(0))(u, t, h)), normalized, atol=1e-4)
  adain = make_norm('adain', 3, 3, rngs=nnx.Rngs(0))
  adain.project.kernel[...] = jnp.eye(3)[None, None]
  expected = normalized * np.sqrt(t.var(axis=(1, 2), keepdims=True) + 1e-5) + t.mean(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(np.asarray(adain(u, t, h)), expected, atol=1e-4)


@pytest.mark.slow
def test_generator_output_range_and_finite_gradients():
  embedder, generator, discriminator = build_models(tiny_config(32), nnx.Rngs(0))
  render, appearance, hint, mask = inputs(32)
  # Large inputs saturate tanh: the output must still stay in [-1, 1].
  y = nnx.jit(lambda g, e: g(10 * render, e(appearance, hint), mask))(generator, embedder)
  assert float(jnp.min(y)) >= -1.0 and float(jnp.max(y)) <= 1.0

  # Every module enters each loss as an argument so that nnx tracks their batch statistics.
  def generator_loss(modules, discriminator):
    embedder, generator = modules
    fake = generator(render, embedder(appearance, hint), mask)
    return sum(-jnp.mean(logits) for _, logits in discriminator(fake, render))

  def discriminator_loss(discriminator, fake):
    real = discriminator(appearance, render)
    fake = discriminator(fake, render)
    return sum(jnp.mean(jax.nn.relu(1 - r[1])) + jnp.mean(jax.nn.relu(1 + f[1])) for r, f in zip(real, fake))

  @nnx.jit
  def gradients(embedder, generator, discriminator):
    grads_g = nnx.grad(generator_loss)((embedder, generator), discriminator)
    fake = jax.lax.stop_gradient(generator(render, embedder(appearance, hint), mask))
    return grads_g, nnx.grad(discriminator_loss)(discriminator, fake)

  grads_g, grads_d = gradients(embedder, generator, discriminator)
  for grads in (grads_g, grads_d):
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_jit_forward_in_eval_mode():
  embedder, generator, _ = build_models(tiny_config(32), nnx.Rngs(0))
  generator.eval()
  render, appearance, hint, mask = inputs(32)
  p = nnx.jit(lambda e: e(appearance, hint))(embedder)
  graphdef, state = nnx.split(generator)
  forward_g = jax.jit(lambda state, r, p, m: nnx.merge(graphdef, state)(r, p, m))
  y = forward_g(state, render, p, mask)
  np.testing.assert_allclose(np.asarray(y), np.asarray(nnx.jit(lambda g: g(render, p, mask))(generator)), atol=1e-5)
  # With running statistics, a sample's output does not depend on the rest of its batch.
  alone = forward_g(state, render[:1], p[:1], mask[:1])
  np.testing.assert_allclose(np.asarray(alone), np.asarray(y[:1]), atol=1e-5)


def test_spectral_norm_tracks_largest_singular_value():
  _, _, discriminator = build_models(tiny_config(32), nnx.Rngs(0))
  layer = discriminator.scales[0].convs[1]
  for _ in range(50):
    layer(jnp.zeros((1, 8, 8, 4)))
  kernel = np.asarray(layer.conv.kernel[...]).reshape(-1, 8)
  u = np.asarray(layer.u[...])
  v = kernel @ u / np.linalg.norm(kernel @ u)
  np.testing.assert_allclose(v @ kernel @ u, np.linalg.svd(kernel, compute_uv=False)[0], rtol=1e-3)
  discriminator.eval()
  frozen = np.asarray(layer.u[...])
  layer(jnp.zeros((1, 8, 8, 4)))
  np.testing.assert_array_equal(np.asarray(layer.u[...]), frozen)


def test_bfloat16_keeps_float32_parameters_and_outputs_close_to_float32():
  """model.dtype='bfloat16': the same parameters (float32) with convolutions and matmuls in bfloat16;
  every output is float32 and within bfloat16's rounding of the float32 model's."""
  full = build_models(tiny_config(32, disc_scales=1), nnx.Rngs(0))
  mixed = build_models(tiny_config(32, disc_scales=1, dtype='bfloat16'), nnx.Rngs(0))
  for module in mixed:
    assert {leaf.dtype for leaf in jax.tree.leaves(nnx.state(module, nnx.Param))} == {jnp.dtype(jnp.float32)}
  render, appearance, hint, mask = inputs(32)

  @nnx.jit
  def forward(models):
    embedder, generator, discriminator = models
    p = embedder(appearance, hint)
    y = generator(render, p, mask)
    return p, y, discriminator(y, render)[0][1]

  for exact, rounded in zip(forward(full), forward(mixed)):
    assert rounded.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(exact)))
    np.testing.assert_allclose(np.asarray(rounded), np.asarray(exact), atol=0.05 * scale)
  with pytest.raises(ValueError, match='model.dtype'):
    build_models(tiny_config(32, dtype='float16'), nnx.Rngs(0))


def test_auto_dtype_is_bfloat16_on_accelerators_and_float32_on_cpu(monkeypatch):
  """model.dtype='auto': bfloat16 where the backend has bfloat16 matrix units (GPU, TPU), float32 on
  CPU; the named dtypes are taken as they are, whatever the backend."""
  import tfvgan_jax.models as models_module
  config = ml_collections.ConfigDict({'dtype': 'auto'})
  assert models_module.compute_dtype(config) == jnp.float32  # the tests run on CPU
  for backend, expected in (('gpu', jnp.bfloat16), ('tpu', jnp.bfloat16), ('cpu', jnp.float32)):
    monkeypatch.setattr(jax, 'default_backend', lambda backend=backend: backend)
    assert models_module.compute_dtype(config) == expected
    assert models_module.compute_dtype(ml_collections.ConfigDict({'dtype': 'float32'})) == jnp.float32
    assert models_module.compute_dtype(ml_collections.ConfigDict({'dtype': 'bfloat16'})) == jnp.bfloat16
  with pytest.raises(ValueError, match="'auto'"):
    models_module.compute_dtype(ml_collections.ConfigDict({'dtype': 'half'}))
