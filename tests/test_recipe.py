"""The recipe switches of the training run: each one's equation against an independent computation,
its wiring through the step, and clear errors for unknown values."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import ROOT, load_config
from tfvgan_jax import face3d, inference, losses, sharding, train
from tfvgan_jax.data import ground_truth
from tfvgan_jax.models import build_models, make_norm
from tfvgan_jax.models import generator as generator_module


def test_discriminator_real_weight_counts_only_the_weighted_samples():
  rng = np.random.default_rng(0)
  real = [jnp.asarray(rng.normal(size=(4, 3, 3, 1)), jnp.float32), jnp.asarray(rng.normal(size=(4, 2, 2, 1)))]
  fake = [jnp.asarray(rng.normal(size=(4, 3, 3, 1)), jnp.float32), jnp.asarray(rng.normal(size=(4, 2, 2, 1)))]
  keep = np.array([True, False, True, False])
  for loss, real_term, fake_term in ((losses.discriminator_hinge_loss, lambda r: np.maximum(1 - r, 0),
                                      lambda f: np.maximum(1 + f, 0)),
                                     (losses.discriminator_non_saturating_loss, lambda r: np.log1p(np.exp(-r)),
                                      lambda f: np.log1p(np.exp(f)))):
    # Reals of the kept samples only, fakes of every sample.
    expected = np.mean([np.mean(real_term(np.asarray(r)[keep])) + np.mean(fake_term(np.asarray(f)))
                        for r, f in zip(real, fake)])
    np.testing.assert_allclose(loss(real, fake, keep), expected, rtol=1e-5)
    np.testing.assert_allclose(loss(real, fake, np.ones(4, bool)), loss(real, fake), rtol=1e-6)


def test_generator_adversarial_weight_counts_only_the_weighted_samples():
  rng = np.random.default_rng(1)
  fake = [jnp.asarray(rng.normal(size=(4, 3, 3, 1)), jnp.float32), jnp.asarray(rng.normal(size=(4, 2, 2, 1)))]
  keep = np.array([False, True, True, False])
  for loss, term in ((losses.generator_hinge_loss, lambda f: -f),
                     (losses.generator_non_saturating_loss, lambda f: np.log1p(np.exp(-f)))):
    expected = np.mean([np.mean(term(np.asarray(f)[keep])) for f in fake])
    np.testing.assert_allclose(loss(fake, keep), expected, rtol=1e-5)
    np.testing.assert_allclose(loss(fake, np.ones(4, bool)), loss(fake), rtol=1e-6)
    np.testing.assert_allclose(loss(fake), np.mean([np.mean(term(np.asarray(f))) for f in fake]), rtol=1e-5)
    assert float(loss(fake, np.zeros(4, bool))) == 0.0  # a batch without intra samples


def test_feature_matching_weighs_samples():
  real = [[jnp.zeros((2, 2, 2, 3)), jnp.zeros((2, 1, 1, 2))]]
  fake = [[jnp.asarray([1.0, 3.0])[:, None, None, None] * jnp.ones((2, 2, 2, 3)),
           jnp.asarray([2.0, 6.0])[:, None, None, None] * jnp.ones((2, 1, 1, 2))]]
  # Sample 0 alone: layers 1 and 2 -> 1.5; both: (2 + 4) / 2 = 3; none enabled: 0.
  np.testing.assert_allclose(losses.feature_matching_loss(real, fake, np.array([1.0, 0.0])), 1.5, rtol=1e-6)
  np.testing.assert_allclose(losses.feature_matching_loss(real, fake), 3.0, rtol=1e-6)
  np.testing.assert_allclose(losses.feature_matching_loss(real, fake, np.zeros(2)), 0.0, atol=1e-7)


def test_rcn_initial_weights_come_from_the_config_and_are_logged(monkeypatch):
  layer = make_norm("rcn", 4, 3, rngs=nnx.Rngs(0), alpha_init=0.3, beta_init=0.6)
  alpha, beta = layer.mixing_weights()
  np.testing.assert_allclose(alpha, 0.3, rtol=1e-5)
  np.testing.assert_allclose(beta, 0.6, rtol=1e-5)
  # The logged means: per layer, the sigmoid of the logits averaged over channels.
  logits = {"up_norms": {0: {"alpha_logit": jnp.asarray([0.0, np.log(3.0)]), "beta_logit": jnp.zeros(2)}}}
  weights = train.rcn_mixing_weights({"generator": logits})
  np.testing.assert_allclose(weights["rcn/alpha/up_norms/0"], (0.5 + 0.75) / 2, rtol=1e-6)
  np.testing.assert_allclose(weights["rcn/beta/up_norms/0"], 0.5, rtol=1e-6)
  # build_models hands the config's values to every RCN layer of G.
  seen = []
  real_make_norm = generator_module.make_norm
  monkeypatch.setattr(generator_module, "make_norm",
                      lambda *args, **kwargs: seen.append(kwargs) or real_make_norm(*args, **kwargs))
  config = load_config("synthetic", "tiny", **{"model.norm": "rcn", "model.rcn_alpha_init": 0.3,
                                               "model.rcn_beta_init": 0.6})
  nnx.eval_shape(lambda: build_models(config.model, nnx.Rngs(0)))
  assert len(seen) == config.model.gen_downsamples
  assert all((kwargs["alpha_init"], kwargs["beta_init"]) == (0.3, 0.6) for kwargs in seen)


@pytest.mark.parametrize("path, value, message", [
    ("data.inter_expression", "third", r"config\.data\.inter_expression='third'.*\['appearance', 'expression'\]"),
    ("loss.disc_real", "inter", r"config\.loss\.disc_real='inter'.*\['all', 'intra'\]"),
    ("loss.tmp_region", "hair", r"config\.loss\.tmp_region='hair'.*\['face', 'frame'\]"),
    ("loss.app_region", "face", r"config\.loss\.app_region='face'.*\['frame', 'background'\]"),
    ("optim.ema_batch_stats", "recompute", r"config\.optim\.ema_batch_stats='recompute'.*\['train', 'average'\]"),
    ("model.gen_skips", "unet", r"config\.model\.gen_skips='unet'.*\['none', 'hint', 'encoder', 'both'\]"),
    ("model.gen_output", "blend", r"config\.model\.gen_output='blend'.*\['image', 'residual'\]"),
    ("model.rcn_alpha_init", 1.0, r"config\.model\.rcn_alpha_init=1\.0: must lie strictly between 0 and 1"),
])
def test_unknown_switch_values_name_the_field_and_the_choices(path, value, message, tmp_path):
  config = load_config("synthetic", "tiny", **{path: value})
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, tmp_path)


def test_background_appearance_loss_is_blind_to_the_face():
  """L_app through the tiny config's E: with 'background' its gradient is zero on the face M^ and
  not elsewhere, and with no face it is the papers' 'frame'; 'frame' compares E(Y, M) with P and
  reaches the face."""
  config = load_config("synthetic", "tiny")
  models = build_models(config.model, nnx.Rngs(0))
  _, e_params, e_vars = nnx.split(models.embedder, nnx.Param, ...)
  networks = inference.abstract_networks(config.model)
  params, variables = {"embedder": e_params}, {"embedder": e_vars}
  size = config.model.image_size
  rng = np.random.default_rng(0)
  output, appearance, hint = (jnp.asarray(rng.uniform(-1, 1, (2, size, size, 3)), jnp.float32) for _ in range(3))
  face = np.zeros((2, size, size, 1), np.float32)
  face[:, size // 4:3 * size // 4, size // 4:3 * size // 4] = 1.0

  def term(y, region, face_mask):
    scene = inference.Scene(*([None] * len(inference.Scene._fields)))._replace(
        appearance=appearance, hint=hint, face_mask=jnp.asarray(face_mask))
    code = inference.embed(networks, params, variables, appearance, hint)
    return train.appearance_term(networks, params, variables, y, code, scene, region)

  on_face = face[..., 0] > 0
  background = np.abs(np.asarray(jax.grad(term)(output, "background", face))).sum(-1)
  assert np.all(background[on_face] == 0) and np.all(background[~on_face].reshape(2, -1).max(1) > 0)
  frame = np.abs(np.asarray(jax.grad(term)(output, "frame", face))).sum(-1)
  assert np.all(frame[on_face].reshape(2, -1).max(1) > 0)
  expected = jnp.mean(jnp.abs(inference.embed(networks, params, variables, output, hint)
                              - inference.embed(networks, params, variables, appearance, hint)))
  np.testing.assert_allclose(term(output, "frame", face), expected, rtol=1e-6)
  no_face = np.zeros_like(face)
  np.testing.assert_allclose(term(output, "background", no_face), term(output, "frame", no_face), rtol=1e-6)
  masked = np.asarray(losses.appearance_loss_image(output, face, "background"))
  np.testing.assert_array_equal(masked, np.where(face > 0, 0.0, np.asarray(output)))
  with pytest.raises(ValueError, match="unknown appearance loss region 'face'"):
    losses.appearance_loss_image(output, face, "face")


def test_defaults_take_the_ablation_winners_and_the_papers_values_are_available():
  for name in ("voxceleb", "synthetic"):
    config = load_config(name, None)
    assert config.data.inter_expression == "appearance" and config.loss.disc_real == "intra"
    assert config.optim.ema_batch_stats == "train" and config.model.gen_skips == "both"
    assert config.loss.app_region == "frame"  # the papers' L_app until an ablation says otherwise
    assert config.model.emb_downsamples == 4  # P at 1/16 of the frame, the papers' scale
    assert (config.model.rcn_alpha_init, config.model.rcn_beta_init) == (0.8, 0.1)
    train.check_recipe(config)
  papers = load_config("voxceleb", None, **{"data.inter_expression": "expression", "model.disc_conditional": False,
                                            "loss.tmp_region": "frame", "loss.disc_real": "all",
                                            "model.gen_skips": "none"})
  train.check_recipe(papers)


@pytest.mark.slow  # traces the whole train step
def test_inter_expression_reaches_the_training_and_evaluation_scenes(monkeypatch):
  """The step and the evaluation pass build their scenes with the configured expression source
  (traced only; `inference.build_scene`'s own behaviour is tested in test_inference)."""
  seen = []
  real_build = inference.build_scene

  def recording(model, batch, tolerance, expression_source="appearance", **options):
    seen.append(expression_source)
    return real_build(model, batch, tolerance, expression_source, **options)

  monkeypatch.setattr(inference, "build_scene", recording)
  config = load_config("synthetic", "tiny", **{"data.inter_expression": "expression", "optim.ema_decay": 0.5,
                                               "optim.ema_batch_stats": "average", "model.gen_skips": "hint"})
  mesh = sharding.create_mesh(config.mesh)
  networks = inference.abstract_networks(config.model)
  optimizers = train.make_optimizers(config.optim)
  state = jax.eval_shape(functools.partial(train.init_state, config, optimizers), jax.random.key(0))
  model = face3d.load_model(config.face_model)
  videos = ground_truth.held_out_videos(model, 5, 3, 1, config.model.image_size)
  batch = inference.step_batch(ground_truth.task_samples(model, videos, ground_truth.TASKS[3], 1,
                                                         config.model.image_size).batch)
  new_state, step_metrics = jax.eval_shape(train.make_train_step(config, networks, mesh, optimizers), state, batch,
                                           model)
  jax.eval_shape(train.make_generate(config, networks, mesh), state, batch, model)
  assert seen == ["expression", "expression"]
  assert "loss/rec" in step_metrics and not any(key.startswith("rcn/") for key in step_metrics)
  # G's averaged batch statistics are carried beside its trained ones.
  averaged = new_state.variables[inference.EMA_STATISTICS]
  assert jax.tree.structure(averaged) == jax.tree.structure(new_state.variables["generator"])


def test_ema_statistics_are_what_the_ema_parameters_run_with():
  variables = {"embedder": {"a": 1}, "generator": {"mean": 2}, inference.EMA_STATISTICS: {"mean": 3}}
  assert inference.evaluation_variables(variables) == {"embedder": {"a": 1}, "generator": {"mean": 3}}
  plain = {"embedder": {"a": 1}, "generator": {"mean": 2}}
  assert inference.evaluation_variables(plain) is plain
  abstract = inference.inference_state(load_config("synthetic", "tiny").model, True, True)
  assert jax.tree.structure(abstract["variables"][inference.EMA_STATISTICS]) == jax.tree.structure(
      abstract["variables"]["generator"])


def test_averaged_statistics_need_an_ema(tmp_path):
  config = load_config("synthetic", "tiny", **{"optim.ema_batch_stats": "average"})  # the demo keeps no EMA
  with pytest.raises(ValueError, match=r"ema_batch_stats='average'.*needs config\.optim\.ema_decay > 0"):
    train.train_and_evaluate(config, tmp_path)


def test_every_ablation_variant_is_a_valid_demo_config():
  import importlib.util
  spec = importlib.util.spec_from_file_location("ablations", ROOT / "benchmarks" / "ablations.py")
  ablations = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ablations)
  for name, fields in ablations.VARIANTS.items():
    config = ablations.variant_config(name, seed=1, steps=10, cache_dir="/nonexistent")
    train.check_recipe(config)
    assert (config.seed, config.data.seed, config.train.num_steps, config.train.eval_every) == (1, 1, 10, 10)
    for path, value in fields.items():
      node = config
      for part in path.split("."):
        node = node[part]
      assert node == value, (name, path)
  with pytest.raises(KeyError, match="no field 'loss.nothing'"):
    ablations.VARIANTS["broken"] = {"loss.nothing": 1}
    try:
      ablations.variant_config("broken", seed=0, steps=None, cache_dir=None)
    finally:
      del ablations.VARIANTS["broken"]


def test_an_ablation_on_another_held_out_set_keeps_the_default_evaluation(tmp_path):
  """Evaluating finished runs on more held-out videos writes beside the default's results, and each
  set reads back only its own."""
  import argparse
  import importlib.util
  import json
  spec = importlib.util.spec_from_file_location("ablations", ROOT / "benchmarks" / "ablations.py")
  ablations = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ablations)
  default = argparse.Namespace(eval_seed=1000, num_videos=8, num_frames=8)
  more = argparse.Namespace(eval_seed=1000, num_videos=32, num_frames=8)
  assert ablations.results_folder(tmp_path, default) == tmp_path / "ground_truth"
  assert ablations.results_folder(tmp_path, more) == tmp_path / "ground_truth_v32_f8_s1000"
  for args in (default, more):
    folder = ablations.results_folder(tmp_path, args)
    folder.mkdir()
    details = {"checkpoint_step": 10, "seed": args.eval_seed, "num_videos": args.num_videos,
               "num_frames": args.num_frames}
    (folder / "results.json").write_text(json.dumps({"details": details}))
  for args in (default, more):
    assert ablations.saved_evaluation(tmp_path, 10, args)["details"]["num_videos"] == args.num_videos
  assert ablations.saved_evaluation(tmp_path, 20, more) is None  # another checkpoint: evaluate again


def test_an_ablation_table_keeps_the_variants_evaluated_before(tmp_path):
  """A call for some variants writes a table that still lists the others evaluated on the same
  held-out set (their saved results), and none evaluated on another set."""
  import argparse
  import importlib.util
  import json
  spec = importlib.util.spec_from_file_location("ablations", ROOT / "benchmarks" / "ablations.py")
  ablations = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ablations)
  more = argparse.Namespace(eval_seed=1000, num_videos=32, num_frames=8, steps=None, cache_dir=None)
  default = argparse.Namespace(**{**vars(more), "num_videos": 8})
  steps = ablations.variant_config("before", 0, None, None).train.num_steps
  for name, seed, args in (("before", 0, more), ("before", 1, more), ("tmp_off", 0, default),
                           ("intra_relative_both", 0, more)):
    folder = ablations.results_folder(tmp_path / name / f"seed{seed}", args)
    folder.mkdir(parents=True)
    details = {"checkpoint_step": steps, "seed": args.eval_seed, "num_videos": args.num_videos,
               "num_frames": args.num_frames, "marker": f"{name}/{seed}"}
    (folder / "results.json").write_text(json.dumps({"details": details}))
  found = ablations.evaluated_elsewhere(tmp_path, {"intra_relative_both"}, more)
  assert {name: [d["details"]["marker"] for d in docs] for name, docs in found.items()} == {
      "before": ["before/0", "before/1"]}
  # Runs evaluated on that set alone count as finished for it (--table_only lists them), not for another.
  assert sorted(ablations.finished_seeds(tmp_path, "before", more)) == [0, 1]
  assert ablations.finished_seeds(tmp_path, "before", default) == []
  assert ablations.finished_seeds(tmp_path, "tmp_off", default) == [0]
