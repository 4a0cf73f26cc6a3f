"""The training run: `train_and_evaluate(config, workdir)`.

One jitted step does a whole sample at t and t-1 (TFVGAN §3.3-3.4, UniFaceGAN §III-C/D):

  scene       `inference.build_scene`, per device: S = mean + A_id a_id(X_i) + A_exp a_exp(X_e)
              projected with X_p's camera, X_i's own mesh for the texture; R, M^, the hint
              M = X_i (1 - M^) (intra) or X_p (1 - M^) (inter); the dense flow F(t -> t-1).
              X_e of inter samples is X_p or the third video (`data.inter_expression`)
  networks    P = E(X_p, M), Y = G(R, P, M^), D(Y, X_i) and D(X_p, X_i) (D(Y), D(X_p) with
              `model.disc_conditional=False`; real X_p of intra samples only with
              `loss.disc_real='intra'`)
  losses      adv, app, rec, tmp (and fm, on intra samples; bg, on inter ones), weighted as eq. 18; the recipe
              switches are checked by `check_recipe` before any work
  updates     G+E with Adam 1e-4, D with Adam 4e-4, betas (0.5, 0.999); optional EMA of G+E

The file reads top to bottom: the train state and the step first, then `train_and_evaluate` in
labelled sections (logging, mesh, input, models and optimizers, sharded init, the jitted step,
checkpoint restore, the loop with evaluation, summaries and saves). The networks as functions and
the scene are `inference`'s (editing and evaluation use the same), the mesh and shardings
`sharding`'s, the checkpoints `checkpoints`'s and the event files `summaries`'.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from flax import nnx, struct
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from tfvgan_jax import checkpoints, compilation, face3d, files, inference, losses, metrics, sharding
from tfvgan_jax.data import evaluation, pipeline, records, sampling, synthetic
from tfvgan_jax.inference import Networks, Scene, at_prev, at_t
from tfvgan_jax.models import GEN_OUTPUTS, GEN_SKIPS, build_models
from tfvgan_jax.summaries import Summaries


class NonFiniteLossError(FloatingPointError):
  """A loss or an updated parameter became NaN or Inf; the run stopped without saving that step."""


def sharded_scene(mesh: jax.sharding.Mesh, face_model, batch: dict, tolerance: float,
                  expression_source: str = "appearance", capacity="auto", relight: bool = False) -> Scene:
  """`inference.build_scene` on each device's slice of a batch sharded over BATCH_AXES."""
  spec = P(sharding.BATCH_AXES)
  out_specs = Scene(*([spec] * (len(Scene._fields) - 1)), overflow=P())

  def local(model, local_batch):
    scene = inference.build_scene(model, local_batch, tolerance, expression_source, capacity=capacity,
                                  relight=relight)
    return scene._replace(overflow=jax.lax.psum(scene.overflow, sharding.BATCH_AXES))

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), spec), out_specs=out_specs)(face_model, batch)


# The recipe switches that choose between named behaviours: {config path: allowed values}. Each
# one's default keeps the behaviour the project had before the switch existed; the papers' value is
# in README's "Recipe switches".
RECIPE_CHOICES = {
    "data.inter_expression": inference.EXPRESSION_SOURCES,
    "loss.disc_real": losses.DISC_REAL,
    "loss.adv_samples": losses.ADV_SAMPLES,
    "loss.tmp_region": losses.TMP_REGIONS,
    "loss.app_region": losses.APP_REGIONS,
    "loss.rec_target": losses.REC_TARGETS,
    "optim.ema_batch_stats": inference.EMA_BATCH_STATS,
    "model.gen_skips": GEN_SKIPS,
    "model.gen_output": GEN_OUTPUTS,
}


def check_recipe(config) -> None:
  """Refuses unknown values of the recipe switches (`RECIPE_CHOICES`) and out-of-range RCN
  initial weights, naming the field and what it allows."""
  for path, allowed in RECIPE_CHOICES.items():
    section, name = path.split(".")
    value = config[section][name]
    if value not in allowed:
      raise ValueError(f"config.{path}={value!r}: unknown value; expected one of {list(allowed)}")
  if config.optim.ema_batch_stats == "average" and not float(config.optim.ema_decay):
    raise ValueError("config.optim.ema_batch_stats='average' averages G's batch statistics like the EMA "
                     "parameters: it needs config.optim.ema_decay > 0")
  for name in ("rcn_alpha_init", "rcn_beta_init"):
    value = float(config.model[name])
    if not 0.0 < value < 1.0:
      raise ValueError(f"config.model.{name}={value}: must lie strictly between 0 and 1 (a sigmoid's value)")


def rcn_mixing_weights(params: dict) -> dict[str, jax.Array]:
  """{'rcn/alpha/LAYER', 'rcn/beta/LAYER': [] mean over channels} of G's RCN layers (none without RCN)."""
  weights = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params["generator"]):
    found = re.fullmatch(r"(.+)/(alpha|beta)_logit(/value)?", jax.tree_util.keystr(path, simple=True, separator="/"))
    if found:
      weights[f"rcn/{found.group(2)}/{found.group(1)}"] = jnp.mean(jax.nn.sigmoid(leaf))
  return weights


# ---------------------------------------------------------------------------------------------
# The train state and the optimizers.
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class TrainState:
  """Everything a step changes, as one pytree (checkpointed whole).

  Attributes:
    step: [] int32, steps done.
    rng: [2] uint32 key data. No default layer draws random numbers, so it is carried unchanged;
      a stochastic layer or augmentation takes `jax.random.fold_in(rng, step)`.
    params: {'embedder', 'generator'}: the parameters trained by the G+E optimizer.
    disc_params: D's parameters.
    variables: {'embedder', 'generator', 'discriminator'}: the other variables (batch-norm
      statistics, spectral-norm vectors); with `optim.ema_batch_stats='average'` also
      `inference.EMA_STATISTICS`, G's statistics averaged like `ema`.
    gen_opt, disc_opt: the two optax states.
    ema: exponential moving average of `params` (empty when config.optim.ema_decay is 0).
  """

  step: jax.Array
  rng: jax.Array
  params: dict
  disc_params: Any
  variables: dict
  gen_opt: Any
  disc_opt: Any
  ema: dict


class Optimizers(NamedTuple):
  """The two optax transformations and their learning-rate schedules, built once per run."""

  generator: optax.GradientTransformation
  discriminator: optax.GradientTransformation
  generator_lr: optax.Schedule
  discriminator_lr: optax.Schedule


def learning_schedule(optim_config, peak: float) -> optax.Schedule:
  """Linear warm-up over `optim.warmup_steps` (none at 0), then constant."""
  warmup = int(optim_config.warmup_steps)
  if warmup <= 0:
    return optax.constant_schedule(peak)
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])


def make_optimizers(optim_config) -> Optimizers:
  """Adam for G+E and for D (two time-scale learning rates, DESIGN.md choice 7)."""
  gen_lr = learning_schedule(optim_config, optim_config.gen_lr)
  disc_lr = learning_schedule(optim_config, optim_config.disc_lr)
  adam = lambda schedule: optax.adam(schedule, b1=optim_config.b1, b2=optim_config.b2)  # noqa: E731
  return Optimizers(adam(gen_lr), adam(disc_lr), gen_lr, disc_lr)


def init_state(config, optimizers: Optimizers, rng: jax.Array) -> TrainState:
  """A fresh train state (jit this with out_shardings to create it already sharded)."""
  models = build_models(config.model, nnx.Rngs(params=rng))
  _, e_params, e_vars = nnx.split(models.embedder, nnx.Param, ...)
  _, g_params, g_vars = nnx.split(models.generator, nnx.Param, ...)
  _, d_params, d_vars = nnx.split(models.discriminator, nnx.Param, ...)
  params = {"embedder": e_params, "generator": g_params}
  variables = {"embedder": e_vars, "generator": g_vars, "discriminator": d_vars}
  if config.optim.ema_decay and config.optim.ema_batch_stats == "average":
    variables[inference.EMA_STATISTICS] = jax.tree.map(jnp.copy, g_vars)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      rng=jax.random.key_data(jax.random.fold_in(rng, 1)),
      params=params,
      disc_params=d_params,
      variables=variables,
      gen_opt=optimizers.generator.init(params),
      disc_opt=optimizers.discriminator.init(d_params),
      ema=jax.tree.map(jnp.copy, params) if config.optim.ema_decay else {},
  )


# ---------------------------------------------------------------------------------------------
# The objectives and the step.
# ---------------------------------------------------------------------------------------------


def loss_weights(loss_config) -> dict[str, float]:
  """The eq. 18 weights of the terms that are on (weight 0 switches a term off and skips it)."""
  return {name: float(weight) for name, weight in loss_config.weights.items() if float(weight) != 0.0}


def appearance_term(networks: Networks, params: dict, variables: dict, output: jax.Array, code: jax.Array,
                    scene: Scene, region: str) -> jax.Array:
  """L_app (eq. 8) of G's output Y through a frozen copy of E (stop-gradient on E's parameters and
  on the target: E learns only from what G makes of P, so L_app cannot be lowered by collapsing
  the embedding).

  'frame' (the papers) compares E(Y, M) with P = E(X_p, M) (`code`); 'background' compares both with
  their face region blanked, E(Y (1 - M^), M) against E(X_p (1 - M^), M)
  (`losses.appearance_loss_image`).
  """
  frozen = jax.lax.stop_gradient(params)
  seen = lambda image: losses.appearance_loss_image(image, scene.face_mask, region)  # noqa: E731
  target = code if region == "frame" else inference.embed(networks, frozen, variables, seen(scene.appearance),
                                                          scene.hint)
  return losses.appearance_loss(inference.embed(networks, frozen, variables, seen(output), scene.hint),
                                jax.lax.stop_gradient(target))


def generator_objective(params, state: TrainState, networks: Networks, scene: Scene, loss_config,
                        conditional: bool):
  """The G+E objective (eq. 18) and its unweighted terms.

  L_app is `appearance_term`.

  Returns:
    total [], and (Y [2B, S, S, 3], G's updated variables, {term: []}).
  """
  weights = loss_weights(loss_config)
  _, generator_adversarial = losses.adversarial_losses(loss_config.adversarial)
  output, code, generator_vars = inference.blend_scene(networks, params, state.variables, scene, train=True)
  condition = scene.identity if conditional else None
  disc_vars = state.variables["discriminator"]
  fake, _ = inference.discriminate(networks, state.disc_params, disc_vars, output, condition)
  intra = jnp.repeat(scene.intra, 2)
  terms = {}
  if "adv" in weights:
    adv_weight = intra if loss_config.get("adv_samples", "all") == "intra" else None
    terms["adv"] = generator_adversarial([logits for _, logits in fake], adv_weight)
  if "app" in weights:
    terms["app"] = appearance_term(networks, params, state.variables, output, code, scene, loss_config.app_region)
  if "rec" in weights:
    target = losses.reconstruction_target(scene.identity, scene.appearance, loss_config.rec_target)
    terms["rec"] = losses.reconstruction_loss(output, target, intra)
  if "bg" in weights:  # off the face on inter samples, where L_rec has no ground truth
    terms["bg"] = losses.background_loss(output, scene.appearance, scene.face_mask, jnp.logical_not(intra))
  if "tmp" in weights:
    enabled = jnp.ones_like(scene.intra) if loss_config.tmp_on_inter else scene.intra
    terms["tmp"] = losses.temporal_loss(at_t(output), at_prev(output), scene.flow, scene.flow_valid,
                                        at_t(scene.face_mask), loss_config.tmp_region, enabled)
  if "fm" in weights:  # Y against its own ground truth only: intra samples (DESIGN.md choice 6)
    real, _ = inference.discriminate(networks, state.disc_params, disc_vars, scene.appearance, condition)
    terms["fm"] = losses.feature_matching_loss([f for f, _ in real], [f for f, _ in fake], intra)
  total, _ = losses.weighted_sum(terms, weights)
  return total, (output, generator_vars, terms)


def discriminator_objective(disc_params, disc_vars, networks: Networks, real: jax.Array, fake: jax.Array,
                            condition: Optional[jax.Array], adversarial: str, real_weight: Optional[jax.Array] = None):
  """D's adversarial loss on real X_p and fake Y (one forward pass over both), and D's variables.

  `real_weight` [2B] weighs the real rows (`loss.disc_real`: None for all, the intra rows for 'intra').
  """
  discriminator_adversarial, _ = losses.adversarial_losses(adversarial)
  both = jnp.concatenate([real, fake], axis=0)
  both_condition = None if condition is None else jnp.concatenate([condition, condition], axis=0)
  outputs, disc_vars = inference.discriminate(networks, disc_params, disc_vars, both, both_condition)
  n = real.shape[0]
  loss = discriminator_adversarial([logits[:n] for _, logits in outputs], [logits[n:] for _, logits in outputs],
                                   real_weight)
  return loss, disc_vars


def _all_finite(values) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(values)]))


def make_train_step(config, networks: Networks, mesh: jax.sharding.Mesh, optimizers: Optimizers):
  """The step (state, batch, face_model) -> (state, metrics), to be jitted by the caller.

  A step whose losses or updated parameters are not all finite returns the state it was given,
  unchanged, so that the run can stop on it with its last good state intact
  ('check/non_finite_params' counts the parameters of that step that were not finite; batch-norm
  statistics follow from the activations that the finite losses were computed from).
  """
  conditional = bool(config.model.disc_conditional)
  ema_decay = float(config.optim.ema_decay)
  tolerance = float(config.render.tolerance)
  expression_source = config.data.inter_expression
  intra_reals_only = config.loss.disc_real == "intra"
  capacity = config.render.capacity
  relight = bool(config.render.get("relight", False))

  def train_step(state: TrainState, batch: dict, face_model: face3d.MorphableModel):
    scene = sharded_scene(mesh, face_model, batch, tolerance, expression_source, capacity, relight)
    (gen_total, (output, generator_vars, terms)), gen_grads = jax.value_and_grad(
        generator_objective, has_aux=True)(state.params, state, networks, scene, config.loss, conditional)
    updates, gen_opt = optimizers.generator.update(gen_grads, state.gen_opt, state.params)
    params = optax.apply_updates(state.params, updates)

    condition = scene.identity if conditional else None
    (disc_total, disc_vars), disc_grads = jax.value_and_grad(discriminator_objective, has_aux=True)(
        state.disc_params, state.variables["discriminator"], networks, scene.appearance,
        jax.lax.stop_gradient(output), condition, config.loss.adversarial,
        jnp.repeat(scene.intra, 2) if intra_reals_only else None)
    updates, disc_opt = optimizers.discriminator.update(disc_grads, state.disc_opt, state.disc_params)
    disc_params = optax.apply_updates(state.disc_params, updates)

    ema = state.ema
    average = lambda old, new: ema_decay * old + (1.0 - ema_decay) * new  # noqa: E731
    if ema_decay:
      ema = jax.tree.map(average, state.ema, params)
    variables = {"embedder": state.variables["embedder"], "generator": generator_vars, "discriminator": disc_vars}
    if inference.EMA_STATISTICS in state.variables:
      variables[inference.EMA_STATISTICS] = jax.tree.map(average, state.variables[inference.EMA_STATISTICS],
                                                         generator_vars)
    new_state = TrainState(step=state.step + 1, rng=state.rng, params=params, disc_params=disc_params,
                           variables=variables, gen_opt=gen_opt, disc_opt=disc_opt, ema=ema)
    step_metrics = {f"loss/{name}": value for name, value in terms.items()}
    step_metrics.update({
        "loss/generator": gen_total,
        "loss/discriminator": disc_total,
        "grad_norm/generator": optax.tree.norm(gen_grads),
        "grad_norm/discriminator": optax.tree.norm(disc_grads),
    })
    updated = (params, disc_params, ema)
    non_finite_params = sum(jnp.sum(~jnp.isfinite(leaf)) for leaf in jax.tree.leaves(updated))
    finite = _all_finite(step_metrics) & (non_finite_params == 0)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    step_metrics.update({
        "check/non_finite_params": non_finite_params,
        "render/overflow_frames": scene.overflow,
        "data/intra_fraction": jnp.mean(scene.intra.astype(jnp.float32)),
    })
    step_metrics.update(rcn_mixing_weights(new_state.params))
    return new_state, step_metrics

  return train_step


def make_generate(config, networks: Networks, mesh: jax.sharding.Mesh):
  """The evaluation pass (state, batch, face_model) -> `inference.evaluation_outputs`, to be jitted
  by the caller: the EMA parameters when the run keeps them, and G's running batch statistics (the
  averaged ones with `optim.ema_batch_stats='average'`). Its scenes are rasterized exactly
  (render.capacity 'auto') whatever the training pool: a measurement never misses pixels."""
  tolerance = float(config.render.tolerance)
  expression_source = config.data.inter_expression
  relight = bool(config.render.get("relight", False))

  def generate(state: TrainState, batch: dict, face_model: face3d.MorphableModel) -> dict:
    scene = sharded_scene(mesh, face_model, batch, tolerance, expression_source, relight=relight)
    if state.ema:
      return inference.evaluation_outputs(networks, state.ema, inference.evaluation_variables(state.variables), scene)
    return inference.evaluation_outputs(networks, state.params, state.variables, scene)

  return generate


# ---------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------


def _first_non_finite(values: dict) -> Optional[str]:
  """The first metric that is NaN or Inf: single loss terms before the totals and gradient norms
  that follow from them, so the message names the term that went bad."""
  totals = ("loss/generator", "loss/discriminator")

  def rank(item):
    name = item[0]
    return (0 if name.startswith("loss/") and name not in totals else 1 if name in totals else 2, name)

  for name, value in sorted(values.items(), key=rank):
    if not np.all(np.isfinite(value)):
      return name
  return None


def resolve_data(config, face_model: face3d.MorphableModel, log=logging.info) -> tuple[ml_collections.ConfigDict, str]:
  """The training data config with its dataset paths filled in, and the held-out dataset path.

  With `data.videos` empty and a `data.synthetic` section, the synthetic corpus and its held-out
  videos are built into `data.synthetic.cache_dir` on first use (`synthetic.cached_corpus`).
  """
  data_config = ml_collections.ConfigDict(config.data.to_dict())
  eval_path = str(config.eval.videos or "")
  generated = config.data.get("synthetic")  # optional: only the synthetic configs have it
  if not data_config.videos and generated:
    cache = epath.Path(generated.cache_dir).expanduser()
    size = int(config.model.image_size)
    data_config.videos = str(synthetic.cached_corpus(cache, face_model, generated.videos, generated.frames, size,
                                                     generated.seed, log=log))
    if not eval_path and generated.eval_videos:
      eval_path = str(synthetic.cached_corpus(cache, face_model, generated.eval_videos, generated.frames, size,
                                              generated.seed + 1, log=log))
  if not data_config.videos:
    raise ValueError(
        "config.data.videos is required: the path of a frame dataset (ArrayRecord frames with fitted "
        "coefficients). Make one from your videos with `python -m data_prep.build --input='DIR/**/*.mp4' "
        "--out=DIR --face_model=PATH`, or a synthetic one with `python -m data_prep.synthetic --out=DIR`.")
  if not eval_path and sampling.check_held_out_tail(data_config.get("held_out_tail", 0.0)):
    eval_path = str(data_config.videos)  # the held-out tails of the training videos
  return data_config, eval_path


def evaluation_tail(data_config, eval_path: str) -> float:
  """The held-out tail to evaluate on: `data.held_out_tail` when the evaluation videos are the
  training videos (then only their tails were never trained on), else 0 (other videos, whole)."""
  if not evaluation.is_training_dataset(eval_path, data_config.videos):
    return 0.0
  tail = sampling.check_held_out_tail(data_config.get("held_out_tail", 0.0))
  if not tail:
    logging.warning("config.eval.videos is the training dataset and config.data.held_out_tail is 0: the evaluation "
                    "measures frames the run trains on")
  return tail


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> TrainState:
  """Trains E, G and D as `config` says, resuming from `workdir` if it holds checkpoints.

  Writes to `workdir`: checkpoints/ (orbax: train state, data iterator state, config, run record),
  tensorboard/ (event files), images/grid_STEP.png (the evaluation grid) and grid.png (the latest).

  Returns:
    The final train state.

  Raises:
    NonFiniteLossError: a loss or an updated parameter became NaN or Inf (the message names it and
      the step); the checkpoints saved before it are kept, except one written just before the
      failing step (resuming it would fail the same way: the data order is fixed).
    checkpoints.CheckpointMismatchError: the workdir's checkpoints belong to another model.
  """
  # ----- Logging -----
  compilation.use_cache(config.train.get("compilation_cache", "auto"))  # before anything compiles
  workdir = epath.Path(workdir).expanduser()
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  summaries = Summaries(workdir / "tensorboard", enabled=is_main)
  check_recipe(config)
  init_networks = checkpoints.parse_init_networks(config.get("init_networks", "all"))
  train_config = config.train
  for name in ("num_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    if int(train_config[name]) < 1:
      raise ValueError(f"config.train.{name}={train_config[name]}: must be at least 1")
  logging.info("workdir %s, %d process(es), %d device(s): %s", workdir, jax.process_count(), jax.device_count(),
               jax.devices()[0].device_kind)

  # ----- Mesh -----
  mesh = sharding.create_mesh(config.mesh)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(sharding.BATCH_AXES))
  shards = sharding.batch_shards(mesh)
  if config.data.batch_size < 1 or config.data.batch_size % shards:
    raise ValueError(f"config.data.batch_size={config.data.batch_size}: must be a positive multiple of the "
                     f"{shards} devices of the mesh")

  # ----- Input -----
  face_model = face3d.load_model(config.face_model)
  data_config, eval_path = resolve_data(config, face_model)
  dataset = pipeline.training_dataset(data_config, face_model)
  iterator = iter(dataset)
  reader_size = records.open_dataset(data_config.videos).image_size
  if reader_size != config.model.image_size:
    raise ValueError(f"{data_config.videos} holds {reader_size} px crops, config.model.image_size is "
                     f"{config.model.image_size}")
  eval_batch = None
  if eval_path:
    eval_batch, eval_size = inference.pad_batch(
        evaluation.self_reenactment_batch(eval_path, config.eval.num_videos, config.eval.num_frames, face_model,
                                          tail=evaluation_tail(data_config, eval_path)),
        shards)
  else:
    logging.warning("no held-out videos (config.eval.videos): the run is not evaluated")

  # ----- Models and optimizers -----
  networks = inference.abstract_networks(config.model)
  optimizers = make_optimizers(config.optim)
  init = functools.partial(init_state, config, optimizers)
  abstract_state = jax.eval_shape(init, jax.random.key(config.seed))
  shardings = sharding.state_shardings(mesh, abstract_state)
  record = inference.run_record(config, face_model, inference.parameter_shapes(
      {"params": abstract_state.params, "disc_params": abstract_state.disc_params,
       "variables": abstract_state.variables}))
  face_model = jax.device_put(jax.tree.map(jnp.asarray, face_model), replicated)
  logging.info("parameters: E+G %s, D %s", f"{sum(x.size for x in jax.tree.leaves(abstract_state.params)):,}",
               f"{sum(x.size for x in jax.tree.leaves(abstract_state.disc_params)):,}")

  # ----- Sharded init -----
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(config.seed))

  # ----- The jitted step -----
  train_step = jax.jit(make_train_step(config, networks, mesh, optimizers),
                       in_shardings=(shardings, batch_sharding, replicated), out_shardings=(shardings, replicated),
                       donate_argnums=0)
  generate = jax.jit(make_generate(config, networks, mesh), in_shardings=(shardings, batch_sharding, replicated),
                     out_shardings=batch_sharding)

  # ----- Checkpoint restore -----
  manager = checkpoints.training_manager(workdir, train_config)
  config_json = json.loads(config.to_json_best_effort())
  target = jax.tree.map(lambda leaf, where: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=where),
                        abstract_state, shardings)
  restored, restored_step = checkpoints.restore(manager, target, iterator, config_json, record)
  if restored is not None:
    state = restored
    logging.info("resumed from %s at step %d", manager.directory, restored_step)
    if config.get("init_from"):
      logging.info("config.init_from is not used: the run resumes its own checkpoint")
  elif config.get("init_from"):
    state, source = checkpoints.initialize_from(config.init_from, state, shardings, record, init_networks)
    logging.info("initialized %s from %s (fresh optimizer states, step 0, this run's data order)",
                 ", ".join(init_networks), source)

  def save(step: int) -> None:
    checkpoints.save(manager, step, state, iterator, config_json, record)

  def evaluate(step: int) -> None:
    if eval_batch is None:
      return
    started = time.perf_counter()
    # Each process feeds its slice of the evaluation batch and reads back the whole result.
    share = len(eval_batch["branch"]) // jax.process_count()
    local = jax.tree.map(lambda x: x[jax.process_index() * share:(jax.process_index() + 1) * share], eval_batch)
    outputs = multihost_utils.process_allgather(
        generate(state, sharding.global_batch(mesh, inference.step_batch(local)), face_model), tiled=True)
    outputs = {name: value[:eval_size] for name, value in outputs.items()}
    results = {"eval/ssim": float(np.mean(outputs["ssim"])),
               "eval/temporal_error": metrics.mean_over_samples_with_flow(outputs["temporal_error"],
                                                                          outputs["flow_pixels"])}
    summaries.scalars(step, results)
    rows = np.arange(0, eval_size, max(1, eval_size // int(config.eval.grid_rows)))[:int(config.eval.grid_rows)]
    grid = inference.image_grid({name: value[rows] for name, value in outputs.items()
                                 if name in inference.GRID_COLUMNS}, len(rows))
    summaries.image(step, "eval/grid", grid)
    if is_main:
      (workdir / "images").mkdir(exist_ok=True)
      for path in (workdir / "images" / f"grid_{step:06d}.png", workdir / "grid.png"):
        with files.atomic_path(path) as temporary:
          Image.fromarray(grid).save(temporary)
    logging.info("eval at step %d: self-reenactment SSIM %.4f, E_tmp %.6f (%d samples, %.1f s)", step,
                 results["eval/ssim"], results["eval/temporal_error"], eval_size, time.perf_counter() - started)

  # ----- The loop, with evaluation, summaries and saves -----
  first_step = int(jax.device_get(state.step))
  num_steps = int(train_config.num_steps)
  if first_step == 0 and train_config.eval_at_start:
    evaluate(0)
  pending = None  # (step, metrics on device) of the step before: read one step late to keep the device busy
  history: list[dict] = []
  interval_start, interval_steps = time.perf_counter(), 0
  run_start = time.perf_counter()

  def check(step: int, device_metrics) -> dict:
    values = jax.device_get(device_metrics)
    bad = _first_non_finite(values)
    if bad is None and values["check/non_finite_params"] > 0:
      bad = "check/non_finite_params"
    if bad is not None:
      manager.wait_until_finished()
      what = (f"{int(values[bad])} parameters updated at step {step} are not finite" if bad == "check/non_finite_params"
              else f"{bad} is {values[bad]} at step {step}")
      set_aside = ""
      if bad != "check/non_finite_params" and manager.latest_step() == step - 1:
        # This step's losses are those of the state saved just before it: resuming that state
        # would fail the same way (the data order is fixed), so it is moved out of the run's
        # checkpoints (kept, not deleted) and a resume starts from the one before.
        set_aside = checkpoints.set_aside(manager, step - 1)
        set_aside = (f" The checkpoint of step {step - 1}, which leads straight to it, was moved to {set_aside}; "
                     f"a resume starts from the one before.")
      last = manager.latest_step()
      raise NonFiniteLossError(
          f"{what}: stopping (a learning rate too high?). The state of that step was not kept.{set_aside} The "
          f"last checkpoint is {'step ' + str(last) if last is not None else 'none'} in {manager.directory}.")
    return values

  try:
    for step in range(first_step + 1, num_steps + 1):
      batch = next(iterator)
      state, step_metrics = train_step(state, sharding.global_batch(mesh, inference.step_batch(batch)), face_model)
      if pending is not None:
        history.append(check(*pending))
      pending = (step, step_metrics)
      interval_steps += 1
      boundary = {name: step % int(train_config[f"{name}_every"]) == 0 or step == num_steps
                  for name in ("log", "eval", "checkpoint")}
      if any(boundary.values()) or manager.latest_step() == step - 1:
        # Checked before anything is logged or saved, and right after a save (see `check`).
        history.append(check(*pending))
        pending = None
      if boundary["log"]:
        elapsed = time.perf_counter() - interval_start
        means = {name: float(np.mean([h[name] for h in history])) for name in history[-1]
                 if name != "check/non_finite_params"}
        means.update({"perf/steps_per_second": interval_steps / elapsed,
                      "perf/images_per_second": interval_steps * config.data.batch_size / elapsed,
                      "learning_rate/generator": float(optimizers.generator_lr(step - 1)),
                      "learning_rate/discriminator": float(optimizers.discriminator_lr(step - 1))})
        summaries.scalars(step, means)
        eta = (num_steps - step) / max(means["perf/steps_per_second"], 1e-9)
        terms = " ".join(f"{name[5:]} {value:.3f}" for name, value in sorted(means.items())
                         if name.startswith("loss/") and name not in ("loss/generator", "loss/discriminator"))
        logging.info("step %d/%d | G %.3f (%s) D %.3f | %.2f steps/s %.1f img/s | eta %s", step, num_steps,
                     means["loss/generator"], terms, means["loss/discriminator"], means["perf/steps_per_second"],
                     means["perf/images_per_second"], _duration(eta))
        if means.get("render/overflow_frames", 0) > 0:
          logging.warning("%.1f frames per step overflowed render.capacity=%s: parts of those faces are not rendered "
                          "(render.capacity='auto' is exact; render.chunks_needed measures what a frame needs)",
                          means["render/overflow_frames"], config.render.capacity)
        history, interval_start, interval_steps = [], time.perf_counter(), 0
      if boundary["eval"]:
        evaluate(step)
      if boundary["checkpoint"]:
        save(step)
      summaries.flush()
  finally:
    manager.wait_until_finished()
    manager.close()
    summaries.close()
  logging.info("done: %d steps in %s", num_steps - first_step, _duration(time.perf_counter() - run_start))
  return state


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
