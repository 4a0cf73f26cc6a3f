"""The training run: `train_and_evaluate(config, workdir)`.

One jitted step does a whole sample at t and t-1 (TFVGAN §3.3-3.4, UniFaceGAN §III-C/D):

  recombine   S = mean + A_id a_id(X_i) + A_exp a_exp(X_p)   (X_e = X_p in both branches),
              projected with X_p's camera; X_i's own mesh with X_i's camera for the texture
  render      R, M^ (face mask) and the hint M = X_i (1 - M^) (intra) or X_p (1 - M^) (inter);
              the dense flow F(t -> t-1) between the recombined meshes
  networks    P = E(X_p, M), Y = G(R, P, M^), D(Y, X_i) and D(X_p, X_i)
  losses      adv, app, rec, tmp (and fm), weighted as eq. 18
  updates     G+E with Adam 1e-4, D with Adam 4e-4, betas (0.5, 0.999); optional EMA of G+E

The file reads top to bottom: the train state and the step first, then `train_and_evaluate` in
labelled sections (logging, mesh, input, models and optimizers, sharded init, the jitted step,
checkpoint restore, the loop with evaluation, summaries and saves).

Sharding: one `jax.make_mesh` with axes ('data', 'fsdp'); a batch is split over both axes, the
parameters are replicated, or split on 'fsdp' along their largest divisible axis. Rendering is
per sample, so it runs under `jax.shard_map` on each device's own frames; the networks run under
plain `jax.jit` and XLA inserts the reductions (batch normalization statistics included).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from typing import Any, NamedTuple, Optional

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx, struct
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from tfvgan_jax import face3d, losses, metrics, render
from tfvgan_jax.data import evaluation, pipeline, records, sampling, synthetic
from tfvgan_jax.models import build_models

BATCH_AXES = ("data", "fsdp")
ROLES = ("identity", "appearance", "expression")
# The frame fields the step reads; the rest of a sample (video numbers, landmarks) stays on the host.
STEP_FIELDS = ("image", "id_coeffs", "exp_coeffs", "camera")


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or Inf; the run stopped without saving that step."""


# ---------------------------------------------------------------------------------------------
# The scene: what the renderer makes of a batch.
# ---------------------------------------------------------------------------------------------


class Scene(NamedTuple):
  """The renderer's view of B samples. Frame arrays are [2B, ...] with the two times of a sample
  side by side: row 2n is sample n at t, row 2n + 1 at t-1 (`at_t`, `at_prev`), so that a batch
  split over devices keeps both times of each sample on the same device.

  Attributes:
    identity: X_i [2B, S, S, 3] in [-1, 1].
    appearance: X_p [2B, S, S, 3] in [-1, 1] (= X_e).
    render: R [2B, S, S, 3], the recombined face textured from X_i, 0 where there is no texture.
    face_mask: M^ [2B, S, S, 1].
    hint: M [2B, S, S, 3], X_i (intra) or X_p (inter) with the face cut out.
    flow: [B, S, S, 2], F(t -> t-1) of the recombined mesh, in pixels.
    flow_valid: [B, S, S] bool, visible at t and at t-1.
    intra: [B] bool, intra-video (self-reenactment) samples.
    overflow: [] int32, frames whose rasterization overflowed its chunk pool.
  """

  identity: jax.Array
  appearance: jax.Array
  render: jax.Array
  face_mask: jax.Array
  hint: jax.Array
  flow: jax.Array
  flow_valid: jax.Array
  intra: jax.Array
  overflow: jax.Array


def to_model_range(image: jax.Array) -> jax.Array:
  """uint8 [..., 3] -> float32 in [-1, 1]."""
  return image.astype(jnp.float32) / 127.5 - 1.0


def step_batch(batch: dict) -> dict:
  """The part of a pipeline batch the jitted functions read (no int64 sample numbers)."""
  out = {f"{role}_{time}": {key: batch[f"{role}_{time}"][key] for key in STEP_FIELDS}
         for role in ROLES for time in sampling.TIMES}
  out["branch"] = batch["branch"]
  return out


def at_t(frames: jax.Array) -> jax.Array:
  """The rows of frame t of a [2B, ...] scene array: [B, ...]."""
  return frames[0::2]


def at_prev(frames: jax.Array) -> jax.Array:
  """The rows of frame t-1 of a [2B, ...] scene array: [B, ...]."""
  return frames[1::2]


def build_scene(face_model: face3d.MorphableModel, batch: dict, tolerance: float) -> Scene:
  """Recombines, renders and computes the flow for a batch (on one device's samples).

  Args:
    face_model: the morphable model the records were fitted with.
    batch: `step_batch` arrays of B samples.
    tolerance: depth slack of the visibility tests, in pixels (`render.visible`).
  """

  def both_times(role: str, field: str) -> jax.Array:  # rows alternate t, t-1 (see `Scene`)
    pair = jnp.stack([batch[f"{role}_t"][field], batch[f"{role}_prev"][field]], axis=1)
    return pair.reshape(-1, *pair.shape[2:])

  identity = to_model_range(both_times("identity", "image"))
  appearance = to_model_range(both_times("appearance", "image"))
  size = identity.shape[1]
  id_coeffs = both_times("identity", "id_coeffs")
  # X_e = X_p in both branches: the expression comes with the appearance frame.
  target_screen = face3d.project_face(face_model, id_coeffs, both_times("appearance", "exp_coeffs"),
                                      both_times("appearance", "camera"))
  identity_screen = face3d.project_face(face_model, id_coeffs, both_times("identity", "exp_coeffs"),
                                        both_times("identity", "camera"))
  face = render.render_face(target_screen, identity_screen, face_model.triangles, identity, size, size,
                            tolerance=tolerance)
  flow, valid = jax.vmap(render.dense_flow, in_axes=(0, 0, None, 0, 0, None))(
      at_t(target_screen), at_prev(target_screen), face_model.triangles, jax.tree.map(at_t, face.fragments),
      jax.tree.map(at_prev, face.fragments), tolerance)
  intra = batch["branch"] == sampling.INTRA
  hint_source = jnp.where(jnp.repeat(intra, 2)[:, None, None, None], identity, appearance)
  return Scene(identity=identity, appearance=appearance, render=face.render, face_mask=face.face_mask,
               hint=render.appearance_hint(hint_source, face.face_mask), flow=flow, flow_valid=valid,
               intra=intra, overflow=jnp.sum(face.fragments.overflow.astype(jnp.int32)))


def sharded_scene(mesh: jax.sharding.Mesh, face_model, batch: dict, tolerance: float) -> Scene:
  """`build_scene` on each device's slice of a batch sharded over BATCH_AXES."""
  spec = P(BATCH_AXES)
  out_specs = Scene(*([spec] * 8), overflow=P())

  def local(model, local_batch):
    scene = build_scene(model, local_batch, tolerance)
    return scene._replace(overflow=jax.lax.psum(scene.overflow, BATCH_AXES))

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), spec), out_specs=out_specs)(face_model, batch)


# ---------------------------------------------------------------------------------------------
# The train state and the networks as functions of it.
# ---------------------------------------------------------------------------------------------


class Networks(NamedTuple):
  """The static structure (NNX graph definitions) of E, G and D."""

  embedder: Any
  generator: Any
  discriminator: Any


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
      statistics, spectral-norm vectors).
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


def abstract_networks(model_config) -> Networks:
  models = nnx.eval_shape(lambda: build_models(model_config, nnx.Rngs(0)))
  return Networks(*(nnx.split(module)[0] for module in models))


def make_optimizers(optim_config) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """Adam for G+E and for D (two time-scale learning rates, DESIGN.md choice 7)."""

  def adam(learning_rate):
    return optax.adam(learning_schedule(optim_config, learning_rate), b1=optim_config.b1, b2=optim_config.b2)

  return adam(optim_config.gen_lr), adam(optim_config.disc_lr)


def learning_schedule(optim_config, peak: float):
  warmup = int(optim_config.get("warmup_steps", 0))
  if warmup <= 0:
    return optax.constant_schedule(peak)
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])


def init_state(config, rng: jax.Array) -> TrainState:
  """A fresh train state (jit this with out_shardings to create it already sharded)."""
  gen_tx, disc_tx = make_optimizers(config.optim)
  models = build_models(config.model, nnx.Rngs(params=rng))
  _, e_params, e_vars = nnx.split(models.embedder, nnx.Param, ...)
  _, g_params, g_vars = nnx.split(models.generator, nnx.Param, ...)
  _, d_params, d_vars = nnx.split(models.discriminator, nnx.Param, ...)
  params = {"embedder": e_params, "generator": g_params}
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      rng=jax.random.key_data(jax.random.fold_in(rng, 1)),
      params=params,
      disc_params=d_params,
      variables={"embedder": e_vars, "generator": g_vars, "discriminator": d_vars},
      gen_opt=gen_tx.init(params),
      disc_opt=disc_tx.init(d_params),
      ema=jax.tree.map(jnp.copy, params) if config.optim.get("ema_decay", 0.0) else {},
  )


def synthesize(networks: Networks, params: dict, variables: dict, scene: Scene, train: bool):
  """P = E(X_p, M) and Y = G(R, P, M^) for a scene.

  Returns:
    Y [2B, S, S, 3], P, and the updated generator variables (batch-norm statistics).
  """
  return blend(networks, params, variables, scene.appearance, scene.hint, scene.render, scene.face_mask, train)


def blend(networks: Networks, params: dict, variables: dict, appearance: jax.Array, hint: jax.Array,
          render_image: jax.Array, face_mask: jax.Array, train: bool):
  """The deep blending network: P = E(X_p, M), Y = G(R, P, M^) (images in [-1, 1]).

  Returns:
    Y [B, S, S, 3], P, and the updated generator variables (batch-norm statistics).
  """
  embedder = nnx.merge(networks.embedder, params["embedder"], variables["embedder"], copy=True)
  generator = nnx.merge(networks.generator, params["generator"], variables["generator"], copy=True)
  if not train:
    generator.eval()
  appearance_code = embedder(appearance, hint)
  output = generator(render_image, appearance_code, face_mask)
  return output, appearance_code, nnx.split(generator, nnx.Param, ...)[2]


def embed(networks: Networks, params: dict, variables: dict, image: jax.Array, hint: jax.Array) -> jax.Array:
  return nnx.merge(networks.embedder, params["embedder"], variables["embedder"], copy=True)(image, hint)


def discriminate(networks: Networks, disc_params, disc_vars, image: jax.Array, condition: Optional[jax.Array]):
  """D(image, condition) per scale, and D's updated variables (spectral-norm vectors)."""
  discriminator = nnx.merge(networks.discriminator, disc_params, disc_vars, copy=True)
  outputs = discriminator(image, condition)
  return outputs, nnx.split(discriminator, nnx.Param, ...)[2]


def loss_weights(loss_config) -> dict[str, float]:
  """The eq. 18 weights of the terms that are on (weight 0 switches a term off and skips it)."""
  return {name: float(weight) for name, weight in loss_config.weights.items() if float(weight) != 0.0}



def generator_objective(params, state: TrainState, networks: Networks, scene: Scene, loss_config,
                        conditional: bool):
  """The G+E objective (eq. 18) and its unweighted terms.

  L_app compares E(Y, M) with E(X_p, M) = P through a frozen copy of E (stop-gradient on E's
  parameters and on P): E learns only from what G makes of P, so L_app cannot be lowered by
  collapsing the embedding.

  Returns:
    total [], and (Y [2B, S, S, 3], G's updated variables, {term: []}).
  """
  weights = loss_weights(loss_config)
  _, generator_adversarial = losses.adversarial_losses(loss_config.adversarial)
  output, code, generator_vars = synthesize(networks, params, state.variables, scene, train=True)
  condition = scene.identity if conditional else None
  disc_vars = state.variables["discriminator"]
  fake, _ = discriminate(networks, state.disc_params, disc_vars, output, condition)
  intra = jnp.repeat(scene.intra, 2)
  terms = {}
  if "adv" in weights:
    terms["adv"] = generator_adversarial([logits for _, logits in fake])
  if "app" in weights:
    frozen = jax.lax.stop_gradient(params)
    terms["app"] = losses.appearance_loss(embed(networks, frozen, state.variables, output, scene.hint),
                                          jax.lax.stop_gradient(code))
  if "rec" in weights:
    target = losses.reconstruction_target(scene.identity, scene.appearance, loss_config.rec_target)
    terms["rec"] = losses.reconstruction_loss(output, target, intra)
  if "tmp" in weights:
    enabled = jnp.ones_like(scene.intra) if loss_config.tmp_on_inter else scene.intra
    terms["tmp"] = losses.temporal_loss(at_t(output), at_prev(output), scene.flow, scene.flow_valid,
                                        at_t(scene.face_mask), loss_config.tmp_region, enabled)
  if "fm" in weights:
    real, _ = discriminate(networks, state.disc_params, disc_vars, scene.appearance, condition)
    terms["fm"] = losses.feature_matching_loss([f for f, _ in real], [f for f, _ in fake])
  total, _ = losses.weighted_sum(terms, weights)
  return total, (output, generator_vars, terms)


def discriminator_objective(disc_params, disc_vars, networks: Networks, real: jax.Array, fake: jax.Array,
                            condition: Optional[jax.Array], adversarial: str):
  """D's adversarial loss on real X_p and fake Y (one forward pass over both), and D's variables."""
  discriminator_adversarial, _ = losses.adversarial_losses(adversarial)
  both = jnp.concatenate([real, fake], axis=0)
  both_condition = None if condition is None else jnp.concatenate([condition, condition], axis=0)
  outputs, disc_vars = discriminate(networks, disc_params, disc_vars, both, both_condition)
  n = real.shape[0]
  loss = discriminator_adversarial([logits[:n] for _, logits in outputs], [logits[n:] for _, logits in outputs])
  return loss, disc_vars


def _all_finite(values: dict) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(values)]))


def make_train_step(config, networks: Networks, mesh: jax.sharding.Mesh):
  """The step (state, batch, face_model) -> (state, metrics), to be jitted by the caller.

  A step whose losses are not all finite returns the state it was given, unchanged, so that the
  run can stop on it with its last good state intact.
  """
  gen_tx, disc_tx = make_optimizers(config.optim)
  conditional = bool(config.model.get("disc_conditional", True))
  ema_decay = float(config.optim.get("ema_decay", 0.0))
  tolerance = float(config.render.tolerance)

  def train_step(state: TrainState, batch: dict, face_model: face3d.MorphableModel):
    scene = sharded_scene(mesh, face_model, batch, tolerance)
    (gen_total, (output, generator_vars, terms)), gen_grads = jax.value_and_grad(
        generator_objective, has_aux=True)(state.params, state, networks, scene, config.loss, conditional)
    updates, gen_opt = gen_tx.update(gen_grads, state.gen_opt, state.params)
    params = optax.apply_updates(state.params, updates)

    condition = scene.identity if conditional else None
    (disc_total, disc_vars), disc_grads = jax.value_and_grad(discriminator_objective, has_aux=True)(
        state.disc_params, state.variables["discriminator"], networks, scene.appearance,
        jax.lax.stop_gradient(output), condition, config.loss.adversarial)
    updates, disc_opt = disc_tx.update(disc_grads, state.disc_opt, state.disc_params)
    disc_params = optax.apply_updates(state.disc_params, updates)

    ema = state.ema
    if ema_decay:
      ema = jax.tree.map(lambda average, new: ema_decay * average + (1.0 - ema_decay) * new, state.ema, params)
    variables = {"embedder": state.variables["embedder"], "generator": generator_vars, "discriminator": disc_vars}
    new_state = TrainState(step=state.step + 1, rng=state.rng, params=params, disc_params=disc_params,
                           variables=variables, gen_opt=gen_opt, disc_opt=disc_opt, ema=ema)
    step_metrics = {f"loss/{name}": value for name, value in terms.items()}
    step_metrics.update({
        "loss/generator": gen_total,
        "loss/discriminator": disc_total,
        "grad_norm/generator": optax.tree.norm(gen_grads),
        "grad_norm/discriminator": optax.tree.norm(disc_grads),
    })
    finite = _all_finite(step_metrics)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    step_metrics.update({
        "render/overflow_frames": scene.overflow,
        "data/intra_fraction": jnp.mean(scene.intra.astype(jnp.float32)),
    })
    return new_state, step_metrics

  return train_step


def make_generate(config, networks: Networks, mesh: jax.sharding.Mesh):
  """The inference pass (state, batch, face_model) -> outputs, to be jitted by the caller.

  Uses the EMA parameters when the run keeps them, and G's running batch statistics.

  Returns a dict of [B] per-sample metrics ('ssim' against X_p at t, 'temporal_error' E_tmp
  between Y(t) and the warped Y(t-1) over the valid flow) and [B, S, S, C] images in [0, 1]
  for the grid: identity, appearance, expression, render, face_mask, hint, output, warped_prev.
  """
  tolerance = float(config.render.tolerance)

  def generate(state: TrainState, batch: dict, face_model: face3d.MorphableModel) -> dict:
    scene = sharded_scene(mesh, face_model, batch, tolerance)
    params = state.ema if state.ema else state.params
    output, _, _ = synthesize(networks, params, state.variables, scene, train=False)
    unit = metrics.to_unit_range
    output_t, output_prev = unit(at_t(output)), unit(at_prev(output))
    warped = render.warp(output_prev, scene.flow)
    return {
        "ssim": metrics.ssim_per_sample(output_t, unit(at_t(scene.appearance))),
        "temporal_error": metrics.temporal_warping_error_per_sample(output_t, output_prev, scene.flow, scene.flow_valid),
        "flow_pixels": jnp.sum(scene.flow_valid, axis=(1, 2)),
        "identity": unit(at_t(scene.identity)),
        "appearance": unit(at_t(scene.appearance)),
        "expression": unit(at_t(scene.appearance)),
        "render": unit(at_t(scene.render)),
        "face_mask": jnp.broadcast_to(at_t(scene.face_mask), output_t.shape),
        "hint": unit(at_t(scene.hint)),
        "output": output_t,
        "warped_prev": jnp.where(scene.flow_valid[..., None], warped, 0.0),
    }

  return generate


GRID_COLUMNS = ("identity", "appearance", "expression", "render", "face_mask", "hint", "output", "warped_prev")


def image_grid(outputs: dict, rows: int) -> np.ndarray:
  """[rows * S, 8 * S, 3] uint8: per sample X_i, X_p, X_e, R, M^, M, Y, warped Y(t-1)."""
  rows = min(rows, outputs["output"].shape[0])
  tiles = [np.concatenate([np.asarray(outputs[name][row]) for name in GRID_COLUMNS], axis=1) for row in range(rows)]
  return (np.clip(np.concatenate(tiles, axis=0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Mesh and shardings.
# ---------------------------------------------------------------------------------------------


def create_mesh(mesh_config) -> jax.sharding.Mesh:
  """The ('data', 'fsdp') mesh; data = -1 takes every device not used by fsdp."""
  devices = jax.devices()
  fsdp = int(mesh_config.get("fsdp", 1))
  data = int(mesh_config.get("data", -1))
  if data == -1:
    if len(devices) % fsdp:
      raise ValueError(f"mesh.fsdp={fsdp} does not divide the {len(devices)} devices")
    data = len(devices) // fsdp
  if data * fsdp > len(devices) or data < 1 or fsdp < 1:
    raise ValueError(f"mesh data={data} x fsdp={fsdp} needs {data * fsdp} devices; {len(devices)} are available")
  # Auto axes: XLA propagates the batch sharding through the networks and inserts the reductions.
  return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2,
                       devices=devices[:data * fsdp])


def parameter_sharding(mesh: jax.sharding.Mesh, shape: tuple) -> NamedSharding:
  """Replicated, or split on 'fsdp' along the largest axis it divides (small arrays stay whole)."""
  fsdp = mesh.shape["fsdp"]
  if fsdp > 1 and math.prod(shape) >= 4096:
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
      if shape[axis] % fsdp == 0:
        spec = [None] * len(shape)
        spec[axis] = "fsdp"
        return NamedSharding(mesh, P(*spec))
  return NamedSharding(mesh, P())


def state_shardings(mesh: jax.sharding.Mesh, abstract_state: TrainState):
  return jax.tree.map(lambda leaf: parameter_sharding(mesh, leaf.shape), abstract_state)


def global_batch(mesh: jax.sharding.Mesh, local_batch: dict) -> dict:
  """This process's slice of a batch -> global arrays split over BATCH_AXES."""
  sharding = NamedSharding(mesh, P(BATCH_AXES))
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


# ---------------------------------------------------------------------------------------------
# Checkpoints and summaries.
# ---------------------------------------------------------------------------------------------


def checkpoint_manager(workdir: epath.Path, train_config) -> ocp.CheckpointManager:
  if jax.default_backend() == "cpu" and jax.local_device_count() > 1:
    # Replica-parallel saving (orbax's default off GPU) compiles a slicing program per array and
    # replica; CPU "devices" share one memory, so it only costs seconds per save there.
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=int(train_config.keep_checkpoints),
      enable_async_checkpointing=bool(train_config.get("async_checkpoints", True)),
      create=True,
  )
  return ocp.CheckpointManager(
      workdir / "checkpoints", options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler()})


class Summaries:
  """TensorBoard event files (written without TensorFlow) on process 0; nothing elsewhere."""

  def __init__(self, logdir: epath.Path, enabled: bool):
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter  # only the writing process needs it
      self._writer = SummaryWriter(str(logdir))

  def scalars(self, step: int, values: dict) -> None:
    if self._writer:
      for name, value in values.items():
        self._writer.add_scalar(name, float(value), step)

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    if self._writer:
      self._writer.add_image(name, image, step, dataformats="HWC")

  def flush(self) -> None:
    if self._writer:
      self._writer.flush()

  def close(self) -> None:
    if self._writer:
      self._writer.close()


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
  eval_path = str(config.eval.get("videos") or "")
  generated = config.data.get("synthetic")
  if not data_config.videos and generated:
    cache = epath.Path(generated.cache_dir).expanduser()
    size = int(config.model.image_size)
    data_config.videos = str(synthetic.cached_corpus(cache, face_model, generated.videos, generated.frames, size,
                                                     generated.seed, log=log))
    if not eval_path and generated.get("eval_videos"):
      eval_path = str(synthetic.cached_corpus(cache, face_model, generated.eval_videos, generated.frames, size,
                                              generated.seed + 1, log=log))
  if not data_config.videos:
    raise ValueError(
        "config.data.videos is required: the path of a frame dataset (ArrayRecord frames with fitted "
        "coefficients). Make one from your videos with `python -m data_prep.build --input='DIR/**/*.mp4' "
        "--out=DIR --face_model=PATH`, or a synthetic one with `python -m data_prep.synthetic --out=DIR`.")
  return data_config, eval_path


def _pad_to(batch: dict, multiple: int) -> tuple[dict, int]:
  """Repeats the last sample so the batch divides over the mesh; returns the real size too."""
  size = len(batch["branch"])
  extra = -size % multiple
  return jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[-1:], extra, axis=0)]), batch), size


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> TrainState:
  """Trains E, G and D as `config` says, resuming from `workdir` if it holds checkpoints.

  Writes to `workdir`: checkpoints/ (orbax: train state, data iterator state, config),
  tensorboard/ (event files), images/grid_STEP.png (the evaluation grid) and grid.png (the latest).

  Returns:
    The final train state.

  Raises:
    NonFiniteLossError: a loss became NaN or Inf (the message names it and the step); the
      checkpoints saved before it are kept.
  """
  # ----- Logging -----
  workdir = epath.Path(workdir).expanduser()
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  summaries = Summaries(workdir / "tensorboard", enabled=is_main)
  train_config = config.train
  logging.info("workdir %s, %d process(es), %d device(s): %s", workdir, jax.process_count(), jax.device_count(),
               jax.devices()[0].device_kind)

  # ----- Mesh -----
  mesh = create_mesh(config.mesh)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(BATCH_AXES))
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.data.batch_size % shards:
    raise ValueError(f"data.batch_size={config.data.batch_size} does not split over the {shards} devices of the mesh")

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
    eval_batch, eval_size = _pad_to(
        evaluation.self_reenactment_batch(eval_path, config.eval.num_videos, config.eval.num_frames, face_model),
        shards)
  else:
    logging.warning("no held-out videos (config.eval.videos): the run is not evaluated")
  face_model = jax.device_put(jax.tree.map(jnp.asarray, face_model), replicated)

  # ----- Models and optimizers -----
  networks = abstract_networks(config.model)
  init = functools.partial(init_state, config)
  abstract_state = jax.eval_shape(init, jax.random.key(config.seed))
  shardings = state_shardings(mesh, abstract_state)
  logging.info("parameters: E+G %s, D %s", f"{sum(x.size for x in jax.tree.leaves(abstract_state.params)):,}",
               f"{sum(x.size for x in jax.tree.leaves(abstract_state.disc_params)):,}")

  # ----- Sharded init -----
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(config.seed))

  # ----- The jitted step -----
  train_step = jax.jit(make_train_step(config, networks, mesh), in_shardings=(shardings, batch_sharding, replicated),
                       out_shardings=(shardings, replicated), donate_argnums=0)
  generate = jax.jit(make_generate(config, networks, mesh), in_shardings=(shardings, batch_sharding, replicated),
                     out_shardings=batch_sharding)

  # ----- Checkpoint restore -----
  manager = checkpoint_manager(workdir, train_config)
  latest = manager.latest_step()
  if latest is not None:
    target = jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                          abstract_state, shardings)
    restored = manager.restore(latest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=grain.checkpoint.CheckpointRestore(iterator)))
    state = restored.state
    logging.info("resumed from %s at step %d", manager.directory, latest)
  config_json = json.loads(config.to_json_best_effort())

  def save(step: int) -> None:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               data=grain.checkpoint.CheckpointSave(iterator),
                                               config=ocp.args.JsonSave(config_json)))

  def evaluate(step: int) -> None:
    if eval_batch is None:
      return
    started = time.perf_counter()
    # Each process feeds its slice of the evaluation batch and reads back the whole result.
    share = len(eval_batch["branch"]) // jax.process_count()
    local = jax.tree.map(lambda x: x[jax.process_index() * share:(jax.process_index() + 1) * share], eval_batch)
    outputs = multihost_utils.process_allgather(generate(state, global_batch(mesh, step_batch(local)), face_model),
                                                tiled=True)
    outputs = {name: value[:eval_size] for name, value in outputs.items()}
    has_flow = outputs["flow_pixels"] > 0
    results = {"eval/ssim": float(np.mean(outputs["ssim"])),
               "eval/temporal_error": float(np.mean(outputs["temporal_error"][has_flow])) if has_flow.any() else 0.0}
    summaries.scalars(step, results)
    rows = np.arange(0, eval_size, max(1, eval_size // int(config.eval.grid_rows)))[:int(config.eval.grid_rows)]
    grid = image_grid({name: value[rows] for name, value in outputs.items() if name in GRID_COLUMNS}, len(rows))
    summaries.image(step, "eval/grid", grid)
    if is_main:
      (workdir / "images").mkdir(exist_ok=True)
      Image.fromarray(grid).save(workdir / "images" / f"grid_{step:06d}.png")
      Image.fromarray(grid).save(workdir / "grid.png")
    logging.info("eval at step %d: self-reenactment SSIM %.4f, E_tmp %.6f (%d samples, %.1f s)", step,
                 results["eval/ssim"], results["eval/temporal_error"], eval_size, time.perf_counter() - started)

  # ----- The loop, with evaluation, summaries and saves -----
  first_step = int(jax.device_get(state.step))
  num_steps = int(train_config.num_steps)
  if first_step == 0 and train_config.get("eval_at_start", True):
    evaluate(0)
  gen_lr = learning_schedule(config.optim, config.optim.gen_lr)
  disc_lr = learning_schedule(config.optim, config.optim.disc_lr)
  pending = None  # (step, metrics on device) of the step before: read one step late to keep the device busy
  history: list[dict] = []
  interval_start, interval_steps = time.perf_counter(), 0
  run_start = time.perf_counter()

  def check(step: int, device_metrics) -> dict:
    values = jax.device_get(device_metrics)
    bad = _first_non_finite(values)
    if bad is not None:
      manager.wait_until_finished()
      last = manager.latest_step()
      raise NonFiniteLossError(
          f"{bad} is {values[bad]} at step {step}: stopping. The state of that step was not kept; "
          f"the last checkpoint is {'step ' + str(last) if last is not None else 'none'} in {manager.directory}.")
    return values

  try:
    for step in range(first_step + 1, num_steps + 1):
      batch = next(iterator)
      state, step_metrics = train_step(state, global_batch(mesh, step_batch(batch)), face_model)
      if pending is not None:
        history.append(check(*pending))
      pending = (step, step_metrics)
      interval_steps += 1
      boundary = {name: step % int(train_config[f"{name}_every"]) == 0 or step == num_steps
                  for name in ("log", "eval", "checkpoint")}
      if any(boundary.values()):
        history.append(check(*pending))
        pending = None
      if boundary["log"]:
        elapsed = time.perf_counter() - interval_start
        means = {name: float(np.mean([h[name] for h in history])) for name in history[-1]}
        means.update({"perf/steps_per_second": interval_steps / elapsed,
                      "perf/images_per_second": interval_steps * config.data.batch_size / elapsed,
                      "learning_rate/generator": float(gen_lr(step - 1)),
                      "learning_rate/discriminator": float(disc_lr(step - 1))})
        summaries.scalars(step, means)
        eta = (num_steps - step) / max(means["perf/steps_per_second"], 1e-9)
        terms = " ".join(f"{name[5:]} {value:.3f}" for name, value in sorted(means.items())
                         if name.startswith("loss/") and name not in ("loss/generator", "loss/discriminator"))
        logging.info("step %d/%d | G %.3f (%s) D %.3f | %.2f steps/s %.1f img/s | eta %s", step, num_steps,
                     means["loss/generator"], terms, means["loss/discriminator"], means["perf/steps_per_second"],
                     means["perf/images_per_second"], _duration(eta))
        if means.get("render/overflow_frames", 0) > 0:
          logging.warning("%.1f frames per step overflowed the rasterizer's chunk pool (raise render.capacity)",
                          means["render/overflow_frames"])
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
