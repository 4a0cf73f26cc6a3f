"""The training run's checkpoints: orbax, with what a resume must check.

Each checkpoint step holds the train state, the input iterator's state, the config (JSON) and a run
record (`inference.run_record`: the face model's name and content hash, the image size and every
network parameter's shape). A resume

  * compares the saved config with the new one: a change of the networks or the face model is
    refused in one line that names the fields; other changes (loss weights, learning rates,
    sampling) are allowed and named in one warning line; the schedule of logging, evaluation and
    saving, the evaluation set, the input workers and the mesh may change freely;
  * falls back to the checkpoint before when the latest cannot be read, with a warning;
  * leaves no orbax temporary folders of an interrupted save behind.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint._src.serialization import type_handler_registry

from tfvgan_jax import inference

# Fields that may differ between the run that wrote a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = ("train.", "eval.", "mesh.", "distributed", "heartbeat_timeout", "data.num_workers",
                     "data.num_threads", "data.prefetch", "data.synthetic.cache_dir", "model.dtype", "render.capacity",
                     "init_from", "init_networks")
# Fields whose change makes the saved networks another model: refused.
ARCHITECTURE = ("model.", "face_model")


class CheckpointMismatchError(ValueError):
  """The checkpoints in a workdir belong to another model than the config describes."""


def _state_handler() -> ocp.PyTreeCheckpointHandler:
  """The train state's handler, with its own type registry.

  Replica-parallel saving (orbax's default off GPU) compiles a slicing program per array and
  replica; CPU "devices" share one memory, so there it only costs seconds per save. The registry is
  this handler's own: orbax's process-wide one is left as it is.
  """
  handlers = list(type_handler_registry._DEFAULT_TYPE_HANDLERS)  # noqa: SLF001 - orbax's defaults, pinned
  if jax.default_backend() == "cpu" and jax.device_count() > 1:
    handlers = [(kind, handler) for kind, handler in handlers if kind is not jax.Array]
    handlers.append((jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False)))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=type_handler_registry.create_type_handler_registry(
      *handlers))


def training_manager(workdir: epath.Path, train_config) -> ocp.CheckpointManager:
  """The run's `CheckpointManager` over workdir/checkpoints (created)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=int(train_config.keep_checkpoints),
      enable_async_checkpointing=bool(train_config.async_checkpoints),
      cleanup_tmp_directories=True,  # a save killed midway leaves a temporary folder: removed here
      create=True,
  )
  return ocp.CheckpointManager(
      epath.Path(workdir) / "checkpoints", options=options,
      item_handlers={"state": _state_handler(), "data": grain.checkpoint.CheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler(), inference.RUN_RECORD: ocp.JsonCheckpointHandler()})


def save(manager: ocp.CheckpointManager, step: int, state, iterator, config_json: dict, record: dict) -> None:
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeSave(state), data=grain.checkpoint.CheckpointSave(iterator),
      config=ocp.args.JsonSave(config_json), **{inference.RUN_RECORD: ocp.args.JsonSave(record)}))


def set_aside(manager: ocp.CheckpointManager, step: int) -> epath.Path:
  """Moves a checkpoint step out of the run's checkpoints (to workdir/checkpoints_set_aside/STEP,
  or STEP-2, STEP-3 ... beside an earlier one), so that a resume does not take it; returns where it
  went."""
  manager.wait_until_finished()
  source = epath.Path(manager.directory) / str(step)
  folder = epath.Path(manager.directory).parent / "checkpoints_set_aside"
  folder.mkdir(parents=True, exist_ok=True)
  destination, copy = folder / str(step), 1
  while destination.exists():  # an earlier failure at the same step: keep both
    copy += 1
    destination = folder / f"{step}-{copy}"
  source.rename(destination)
  manager.reload()
  return destination


def flatten(tree: Any, prefix: str = "") -> dict:
  """{'a.b.c': value} of a nested dict."""
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def config_changes(saved: dict, current: dict) -> dict[str, tuple]:
  """{field: (saved value, current value)} of the fields that differ between two config dicts."""
  old, new = flatten(saved), flatten(current)
  return {key: (old.get(key, "<absent>"), new.get(key, "<absent>")) for key in sorted(set(old) | set(new))
          if old.get(key, "<absent>") != new.get(key, "<absent>")}


def _differing(old: dict, new: dict) -> list:
  """The keys, sorted, whose values differ between two {key: value} dicts (absent counts)."""
  return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))


def _describe(changes: dict) -> str:
  return ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())


def check_resume(directory, step: int, saved_config: dict, current_config: dict, saved_record: Optional[dict],
                 current_record: dict) -> None:
  """Refuses to resume a checkpoint of another model; warns in one line of other config changes.

  Raises:
    CheckpointMismatchError: the networks (model.* fields, parameter shapes) or the face model differ.
  """
  changes = {key: value for key, value in config_changes(saved_config, current_config).items()
             if not key.startswith(RESUMABLE_CHANGES)}
  architecture = {key: value for key, value in changes.items() if key.startswith(ARCHITECTURE)}
  problems = []
  if architecture:
    problems.append(_describe(architecture))
  if saved_record:
    if saved_record.get("face_model_hash") != current_record["face_model_hash"] and "face_model" not in architecture:
      problems.append(f"face model {saved_record.get('face_model_name')!r} -> {current_record['face_model_name']!r} "
                      f"(another content hash)")
    shapes_old, shapes_new = saved_record.get("parameter_shapes", {}), current_record["parameter_shapes"]
    differing = _differing(shapes_old, shapes_new)
    if differing and not architecture:
      problems.append(f"{len(differing)} parameter shapes ({differing[0]}: {shapes_old.get(differing[0])} -> "
                      f"{shapes_new.get(differing[0])})")
  if problems:
    raise CheckpointMismatchError(
        f"{directory}: step {step} was written by another model: {'; '.join(problems)}; resume with the config it "
        f"was trained with, or start a new --workdir")
  others = {key: value for key, value in changes.items() if key not in architecture}
  if others:
    logging.warning("resuming step %d of %s with a changed config: %s", step, directory, _describe(others))


def _read_json(step_dir: epath.Path, item: str) -> Optional[dict]:
  """`inference.checkpoint_json`, or None where the item cannot be read (the step's restore then
  decides whether the checkpoint is usable)."""
  try:
    return inference.checkpoint_json(step_dir, item)
  except (OSError, ValueError):
    return None


def restore(manager: ocp.CheckpointManager, target, iterator, config_json: dict, record: dict):
  """The newest readable checkpoint restored into `target`'s structure and shardings, and its step.

  Returns (state, step), or (None, None) when the workdir has no checkpoint.

  Raises:
    CheckpointMismatchError: the checkpoints belong to another model (`check_resume`).
    inference.CheckpointError: checkpoints exist but none can be read.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  failures = []
  for step in steps:
    step_dir = epath.Path(manager.directory) / str(step)
    saved_config = _read_json(step_dir, "config")
    if saved_config is not None:
      check_resume(manager.directory, step, saved_config, config_json, _read_json(step_dir, inference.RUN_RECORD),
                   record)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)),
          data=grain.checkpoint.CheckpointRestore(iterator)))
    except CheckpointMismatchError:
      raise
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint falls back to the one before
      reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
      failures.append(f"step {step} ({reason})")
      logging.warning("checkpoint step %d in %s cannot be read (%s); trying the one before", step,
                      manager.directory, reason)
      continue
    if failures:
      logging.warning("resumed from step %d: the newer checkpoint(s) %s could not be read", step, ", ".join(failures))
    return restored.state, step
  if failures:
    raise inference.CheckpointError(f"{manager.directory}: no checkpoint can be read: {'; '.join(failures)}")
  return None, None


# ---------------------------------------------------------------------------------------------
# Starting a run from another run's networks (`config.init_from`).
# ---------------------------------------------------------------------------------------------

# The networks `config.init_networks` may name, and the train-state entries each one is made of
# ((state field, key) pairs; None: the whole field).
INIT_NETWORKS = {
    "embedder": (("params", "embedder"), ("variables", "embedder"), ("ema", "embedder")),
    "generator": (("params", "generator"), ("variables", "generator"), ("ema", "generator"),
                  ("variables", inference.EMA_STATISTICS)),
    "discriminator": (("disc_params", None), ("variables", "discriminator")),
}


def parse_init_networks(value) -> tuple[str, ...]:
  """The networks of `config.init_networks` ('all', or comma-separated names of `INIT_NETWORKS`)."""
  names = [name.strip() for name in str(value).split(",") if name.strip()]
  if names == ["all"]:
    return tuple(INIT_NETWORKS)
  unknown = [name for name in names if name not in INIT_NETWORKS]
  if unknown or not names:
    raise ValueError(f"config.init_networks={value!r}: give 'all' or a comma-separated list of "
                     f"{', '.join(INIT_NETWORKS)}")
  return tuple(dict.fromkeys(names))


def _shape_prefixes(networks: tuple[str, ...]) -> tuple[str, ...]:
  """The `inference.parameter_shapes` key prefixes of the named networks."""
  return tuple(f"{field}/" if key is None else f"{field}/{key}/"
               for name in networks for field, key in INIT_NETWORKS[name] if field != "ema")


def check_init_source(step_dir, saved_record: Optional[dict], record: dict, networks: tuple[str, ...]) -> None:
  """Refuses to start from a checkpoint of another face model, image size or network shape.

  Raises:
    CheckpointMismatchError: naming the checkpoint, what differs, and both values.
  """
  if saved_record is None:
    raise CheckpointMismatchError(
        f"{step_dir}: the checkpoint has no run record (face model, image size, parameter shapes), so it "
        f"cannot be checked against this run; resume it with its own config instead")
  problems = []
  if saved_record.get("face_model_hash") != record["face_model_hash"]:
    problems.append(f"face model {saved_record.get('face_model_name')!r} ({saved_record.get('face_model')}) there, "
                    f"{record['face_model_name']!r} ({record['face_model']}) here")
  if saved_record.get("image_size") != record["image_size"]:
    problems.append(f"image size {saved_record.get('image_size')} px there, {record['image_size']} px here")
  # Records from before the field were all of the papers' generator.
  outputs = saved_record.get("generator_output", "image"), record.get("generator_output", "image")
  if "generator" in networks and outputs[0] != outputs[1]:
    problems.append(f"generator output {outputs[0]!r} there, {outputs[1]!r} here (model.gen_output: the same "
                    f"parameter shapes, another meaning of G's head)")
  prefixes = _shape_prefixes(networks)
  old = {key: shape for key, shape in saved_record.get("parameter_shapes", {}).items() if key.startswith(prefixes)}
  new = {key: shape for key, shape in record["parameter_shapes"].items() if key.startswith(prefixes)}
  differing = _differing(old, new)
  if differing:
    problems.append(f"{len(differing)} parameter shapes of {', '.join(networks)} differ ({differing[0]}: "
                    f"{old.get(differing[0], 'absent')} there, {new.get(differing[0], 'absent')} here)")
  if problems:
    raise CheckpointMismatchError(
        f"config.init_from={step_dir}: another model than this run's: {'; '.join(problems)}. Start from a "
        f"checkpoint of the same face model, image size and config.model, or set config.init_networks to the "
        f"networks that match")


def initialize_from(source, state, shardings, record: dict, networks: tuple[str, ...]):
  """`state` with the named networks taken from another run's checkpoint (`config.init_from`).

  The parameters and variables of the named networks come from the checkpoint, and the EMA copy of
  E and G from its EMA (from the loaded parameters where it kept none); everything else of `state`
  (the optimizer states, the step, the other networks) stays as initialized, and the data order is
  the run's own.

  Args:
    source: a run's --workdir, its checkpoints/ folder or one step's folder (the latest step unless
      a step's folder is given).
    state: the freshly initialized `train.TrainState` (sharded).
    shardings: its shardings (the same structure).
    record: this run's `inference.run_record`.
    networks: names of `INIT_NETWORKS`.

  Returns:
    (state, step_dir): the new state and the checkpoint it was initialized from.

  Raises:
    inference.CheckpointError: no readable checkpoint there.
    CheckpointMismatchError: a checkpoint of another face model, image size or network shape.
  """
  directory, step = inference.find_checkpoint(source)
  step_dir = epath.Path(directory) / str(step)
  try:
    saved_record = inference.checkpoint_json(step_dir, inference.RUN_RECORD)
  except (OSError, ValueError) as error:
    raise inference.CheckpointError(f"{step_dir}: its run record is unreadable ({error})") from error
  check_init_source(step_dir, saved_record, record, networks)
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  try:
    plan = _init_plan(state, inference.saved_state_tree(checkpointer, step_dir), networks)
    target = {}
    for (field, key), (source_field, source_key) in plan.items():
      entry = jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                           _entry(state, field, key), _entry(shardings, field, key))
      if source_key is None:
        target[source_field] = entry
      else:
        target.setdefault(source_field, {})[source_key] = entry
    try:
      loaded = checkpointer.restore(step_dir / "state", args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
    except Exception as error:  # noqa: BLE001
      raise inference.CheckpointError(
          f"{step_dir}/state: cannot restore {', '.join(networks)} ({type(error).__name__}: "
          f"{str(error).splitlines()[0] if str(error) else ''})") from error
  finally:
    checkpointer.close()
  fields = {field: getattr(state, field) for field in ("params", "disc_params", "variables", "ema")}
  fields = {field: dict(value) if isinstance(value, dict) else value for field, value in fields.items()}
  used = set()
  for (field, key), (source_field, source_key) in plan.items():
    value = loaded[source_field] if source_key is None else loaded[source_field][source_key]
    if (source_field, source_key) in used:  # one saved entry in two places (EMA from the parameters)
      value = jax.tree.map(lambda array: jax.device_put(array, array.sharding, may_alias=False), value)
    used.add((source_field, source_key))
    if key is None:
      fields[field] = value
    else:
      fields[field][key] = value
  return state.replace(**fields), step_dir


def _entry(tree, field: str, key: Optional[str]):
  value = getattr(tree, field)
  return value if key is None else value[key]


def _init_plan(state, saved: dict, networks: tuple[str, ...]) -> dict:
  """{(state field, key): (checkpoint field, key)} of what `initialize_from` loads where."""
  plan = {}
  for name in networks:
    for field, key in INIT_NETWORKS[name]:
      if key is not None and key not in getattr(state, field):
        continue  # this run keeps no such entry (no EMA, no averaged statistics)
      source = (field, key)
      if field == "ema" and not jax.tree.leaves(saved.get("ema", {}).get(key, {})):
        source = ("params", key)  # the checkpoint kept no EMA: start the EMA from the parameters
      elif key == inference.EMA_STATISTICS and key not in saved.get("variables", {}):
        source = ("variables", "generator")  # no averaged statistics there: start from the trained ones
      plan[(field, key)] = source
  return plan
