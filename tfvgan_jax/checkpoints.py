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
                     "data.num_threads", "data.prefetch", "data.synthetic.cache_dir", "model.dtype", "render.capacity")
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
    differing = sorted(key for key in set(shapes_old) | set(shapes_new) if shapes_old.get(key) != shapes_new.get(key))
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
