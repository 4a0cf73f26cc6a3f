"""What a resume checks, and what inference restores: checkpoints of another model are refused in
one line, an unreadable latest checkpoint falls back to the one before, a state whose parameters are
not finite is never saved, and the face model's hash travels with the checkpoint."""

import json
import logging
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import load_config
from tfvgan_jax import checkpoints, face3d, inference, train

pytestmark = pytest.mark.slow  # trains or edits with a real (tiny) checkpoint


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("synthetic_cache"))


def tiny(cache_dir, **overrides):
  return load_config(**{"data.synthetic.cache_dir": cache_dir, "data.synthetic.eval_videos": 0, **overrides})


def steps_of(workdir):
  manager = ocp.CheckpointManager(workdir / "checkpoints")
  try:
    return manager.all_steps()
  finally:
    manager.close()


def test_config_changes_name_the_fields():
  saved = {"model": {"gen_width": 8, "norm": "spade"}, "train": {"num_steps": 2}, "optim": {"gen_lr": 1e-4}}
  current = {"model": {"gen_width": 16, "norm": "spade"}, "train": {"num_steps": 4}, "optim": {"gen_lr": 2e-4},
             "new": 1}
  assert checkpoints.config_changes(saved, current) == {
      "model.gen_width": (8, 16), "new": ("<absent>", 1), "optim.gen_lr": (1e-4, 2e-4), "train.num_steps": (2, 4)}
  record = {"face_model_hash": "a", "face_model_name": "m", "parameter_shapes": {"w": [3]}}
  with pytest.raises(checkpoints.CheckpointMismatchError, match=r"step 5 was written by another model: "
                     r"model\.gen_width 8 -> 16; resume with the config"):
    checkpoints.check_resume("dir", 5, saved, current, record, record)
  other = dict(record, face_model_hash="b", face_model_name="n")
  same_model = dict(saved, model=current["model"])
  with pytest.raises(checkpoints.CheckpointMismatchError, match=r"face model 'm' -> 'n' \(another content hash\)"):
    checkpoints.check_resume("dir", 5, same_model, current, record, other)
  checkpoints.check_resume("dir", 5, same_model, current, record, record)  # a warning only


def test_resume_refuses_another_architecture_in_one_line(tmp_path, cache_dir):
  """Before: 687 lines and 51 tracebacks; the saved config was never compared."""
  train.train_and_evaluate(tiny(cache_dir, **{"train.num_steps": 1, "train.checkpoint_every": 1}), tmp_path)
  with pytest.raises(checkpoints.CheckpointMismatchError) as error:
    train.train_and_evaluate(tiny(cache_dir, **{"train.num_steps": 2, "model.gen_width": 16}), tmp_path)
  assert "\n" not in str(error.value) and "model.gen_width 8 -> 16" in str(error.value)
  assert steps_of(tmp_path) == [1]


def test_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path, cache_dir, caplog):
  config = tiny(cache_dir, **{"train.num_steps": 2, "train.checkpoint_every": 1})
  train.train_and_evaluate(config, tmp_path)
  assert steps_of(tmp_path) == [1, 2]
  for path in (tmp_path / "checkpoints" / "2" / "state").rglob("*"):
    if path.is_file():
      path.write_bytes(b"garbage")
  # Orbax's temporary folder of a save killed midway: removed by the next run.
  leftover = tmp_path / "checkpoints" / "7.orbax-checkpoint-tmp-1234567"
  leftover.mkdir()
  with caplog.at_level(logging.WARNING):
    state = train.train_and_evaluate(tiny(cache_dir, **{"train.num_steps": 3, "train.checkpoint_every": 1}),
                                     tmp_path)
  assert int(state.step) == 3
  assert any("checkpoint step 2" in r.getMessage() and "cannot be read" in r.getMessage() for r in caplog.records)
  assert any("resumed from step 1" in r.getMessage() for r in caplog.records)
  assert not leftover.exists()


def test_non_finite_parameters_are_never_saved(tmp_path, cache_dir):
  """Before: only the losses were checked, so with a huge learning rate a checkpoint of parameters
  ~1e30 was saved, and every later resume stopped at the next step."""
  # 1e39 is inf in float32: the first update makes the parameters infinite, the losses still finite.
  with pytest.raises(train.NonFiniteLossError, match=r"parameters updated at step 1 are not finite.*last checkpoint is "
                     r"none"):
    train.train_and_evaluate(tiny(cache_dir, **{"train.num_steps": 3, "train.checkpoint_every": 1,
                                                "optim.gen_lr": 1e39}), tmp_path / "inf")
  assert steps_of(tmp_path / "inf") == []
  # 1e30: finite parameters, saved at step 1; step 2's losses are not finite, so the checkpoint that
  # leads straight to them is moved aside and a resume does not start from it.
  with pytest.raises(train.NonFiniteLossError, match=r"at step 2.*moved to"):
    train.train_and_evaluate(tiny(cache_dir, **{"train.num_steps": 3, "train.checkpoint_every": 1,
                                                "optim.gen_lr": 1e30, "optim.disc_lr": 1e30}), tmp_path / "big")
  assert steps_of(tmp_path / "big") == []
  state = train.train_and_evaluate(tiny(cache_dir, **{"train.num_steps": 1, "train.checkpoint_every": 1}),
                                   tmp_path / "big")
  assert int(state.step) == 1 and all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_inference_restores_only_the_networks_and_checks_the_recorded_face_model(tmp_path, cache_dir):
  model_file = tmp_path / "model.npz"
  face3d.save(face3d.load_model("procedural:low"), model_file)
  config = tiny(cache_dir, **{"train.num_steps": 1, "train.checkpoint_every": 1, "optim.ema_decay": 0.5,
                              "face_model": str(model_file)})
  state = train.train_and_evaluate(config, tmp_path / "run")
  loaded = inference.load_checkpoint(tmp_path / "run")
  assert loaded.step == 1 and loaded.image_size == 32
  for expected, got in zip(jax.tree.leaves(state.ema), jax.tree.leaves(loaded.params)):  # the EMA copy
    np.testing.assert_array_equal(np.asarray(expected), np.asarray(got))
  assert set(loaded.variables) == {"embedder", "generator"}  # no D, no optimizer states
  record = json.loads((tmp_path / "run" / "checkpoints" / "1" / "run" / "metadata").read_text())
  assert record["face_model_hash"] == face3d.content_hash(face3d.load(model_file)) and record["image_size"] == 32
  # The run's model file gone: a replacement is checked against the recorded hash.
  moved = tmp_path / "moved.npz"
  shutil.move(model_file, moved)
  with pytest.raises(inference.CheckpointError, match="not readable here; pass that model with --face_model"):
    inference.load_checkpoint(tmp_path / "run")
  other = tmp_path / "other.npz"
  face3d.save(face3d.procedural_model(seed=3, detail="low"), other)
  with pytest.raises(inference.CheckpointError, match="other.npz: not the face model the checkpoint was trained with"):
    inference.load_checkpoint(tmp_path / "run", face_model=str(other))
  assert inference.load_checkpoint(tmp_path / "run", face_model=str(moved)).step == 1
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(b"not a zip")
  with pytest.raises(face3d.ModelFileError, match="corrupt.npz"):
    inference.load_checkpoint(tmp_path / "run", face_model=str(corrupt))
  with pytest.raises(inference.CheckpointError, match="no checkpoint of step 9"):
    inference.load_checkpoint(tmp_path / "run", step=9)


def test_training_command_line_errors_are_one_line(tmp_path, cache_dir):
  """Before: a corrupt face model or --config.data.batch_size=0 ended in a traceback."""
  import subprocess
  import sys

  from helpers import ROOT
  corrupt = tmp_path / "model.npz"
  corrupt.write_bytes(b"not a zip file")
  for extra, expected in (([f"--config.face_model={corrupt}"], f"error: {corrupt}: not a"),
                          (["--config.data.batch_size=0"], "error: config.data.batch_size=0: must be a positive")):
    run = subprocess.run([sys.executable, "-m", "tfvgan_jax.main", "--config=configs/synthetic.py:tiny",
                          f"--workdir={tmp_path / 'run'}", f"--config.data.synthetic.cache_dir={cache_dir}", *extra],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1].startswith(expected), run.stderr[-2000:]


def test_a_checkpoint_set_aside_twice_at_the_same_step_keeps_both(tmp_path):
  class Manager:  # the two calls set_aside makes of orbax's manager, and its folder
    directory = tmp_path / "checkpoints"

    def wait_until_finished(self):
      pass

    def reload(self):
      pass

  for content in ("first", "second"):
    (tmp_path / "checkpoints" / "2").mkdir(parents=True)
    (tmp_path / "checkpoints" / "2" / "state").write_text(content)
    checkpoints.set_aside(Manager(), 2)
  aside = tmp_path / "checkpoints_set_aside"
  assert sorted(p.name for p in aside.iterdir()) == ["2", "2-2"]
  assert (aside / "2" / "state").read_text() == "first" and (aside / "2-2" / "state").read_text() == "second"
  assert not (tmp_path / "checkpoints" / "2").exists()


def fresh_state(config, seed=7):
  """A freshly initialized, sharded train state of `config`, its shardings and run record (as
  `train.train_and_evaluate` makes them)."""
  from tfvgan_jax import sharding
  optimizers = train.make_optimizers(config.optim)
  init = lambda key: train.init_state(config, optimizers, key)  # noqa: E731
  abstract = jax.eval_shape(init, jax.random.key(seed))
  shardings = sharding.state_shardings(sharding.create_mesh(config.mesh), abstract)
  record = inference.run_record(config, face3d.load_model(config.face_model), inference.parameter_shapes(
      {"params": abstract.params, "disc_params": abstract.disc_params, "variables": abstract.variables}))
  return jax.jit(init, out_shardings=shardings)(jax.random.key(seed)), shardings, record


def assert_same(a, b, empty=False):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) and (empty or leaves_a)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_differ(a, b):
  assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_init_from_loads_the_named_networks_and_their_ema_with_fresh_optimizers(tmp_path, cache_dir):
  source = train.train_and_evaluate(tiny(cache_dir, **{"train.num_steps": 2, "optim.ema_decay": 0.5}),
                                    tmp_path / "source")
  config = tiny(cache_dir, **{"optim.ema_decay": 0.9})
  fresh, shardings, record = fresh_state(config)
  assert_differ(fresh.params, source.params)

  state, step_dir = checkpoints.initialize_from(tmp_path / "source", fresh, shardings, record,
                                                checkpoints.parse_init_networks("all"))
  assert step_dir.name == "2"
  assert_same(state.params, source.params)
  assert_same(state.ema, source.ema)  # the EMA from the checkpoint's EMA, not from its parameters
  assert_differ(state.ema, source.params)
  assert_same(state.disc_params, source.disc_params)
  assert_same(state.variables, source.variables)
  assert_same(state.gen_opt, fresh.gen_opt) and assert_same(state.disc_opt, fresh.disc_opt)
  assert int(state.step) == 0
  assert state.params["generator"] is not None and state.params.keys() == fresh.params.keys()

  # Only G and E, from a step's folder: D stays as initialized.
  state, step_dir = checkpoints.initialize_from(tmp_path / "source" / "checkpoints" / "2", fresh, shardings, record,
                                                checkpoints.parse_init_networks("generator, embedder"))
  assert_same(state.params, source.params)
  assert_same(state.disc_params, fresh.disc_params)
  assert_same(state.variables["discriminator"], fresh.variables["discriminator"], empty=True)

  # A checkpoint without an EMA: this run's EMA starts from the loaded parameters (a copy).
  no_ema = train.train_and_evaluate(tiny(cache_dir, **{"train.num_steps": 1}), tmp_path / "no_ema")
  state, _ = checkpoints.initialize_from(tmp_path / "no_ema", fresh, shardings, record, ("embedder", "generator"))
  assert_same(state.ema, no_ema.params) and assert_same(state.params, no_ema.params)

  with pytest.raises(ValueError, match=r"config.init_networks='decoder'.*embedder, generator, discriminator"):
    checkpoints.parse_init_networks("decoder")


def test_init_from_refuses_another_model_naming_both(tmp_path, cache_dir):
  train.train_and_evaluate(tiny(cache_dir, **{"train.num_steps": 1}), tmp_path / "source")
  wider = tiny(cache_dir, **{"model.disc_width": 16})
  fresh, shardings, record = fresh_state(wider)
  with pytest.raises(checkpoints.CheckpointMismatchError, match=r"parameter shapes of discriminator differ "
                     r"\(disc_params/.*there, .* here\)"):
    checkpoints.initialize_from(tmp_path / "source", fresh, shardings, record, ("discriminator",))
  # The networks that do match may still be taken.
  state, _ = checkpoints.initialize_from(tmp_path / "source", fresh, shardings, record, ("embedder", "generator"))
  assert int(state.step) == 0

  saved = json.loads((tmp_path / "source" / "checkpoints" / "1" / "run" / "metadata").read_text())
  other = dict(saved, face_model="face468.npz", face_model_name="learned", face_model_hash="x", image_size=64)
  with pytest.raises(checkpoints.CheckpointMismatchError) as error:
    checkpoints.check_init_source("src/1", saved, other, ("generator",))
  message = str(error.value)
  assert "\n" not in message and "config.init_from=src/1" in message
  assert "face model 'procedural-v1-low' (procedural:low) there" in message and "'learned' (face468.npz) here" in message
  assert "image size 32 px there, 64 px here" in message
  with pytest.raises(checkpoints.CheckpointMismatchError, match="has no run record"):
    checkpoints.check_init_source("src/1", None, other, ("generator",))
  # A generator whose head is read another way (model.gen_output) has the same shapes: named, and
  # refused for G only; a record from before the field is the papers' 'image'.
  assert saved["generator_output"] == "image"
  residual = dict(saved, generator_output="residual")
  with pytest.raises(checkpoints.CheckpointMismatchError, match=r"generator output 'image' there, 'residual' here"):
    checkpoints.check_init_source("src/1", saved, residual, ("embedder", "generator"))
  checkpoints.check_init_source("src/1", saved, residual, ("embedder", "discriminator"))
  checkpoints.check_init_source("src/1", {k: v for k, v in saved.items() if k != "generator_output"}, saved,
                                ("generator",))
  with pytest.raises(inference.CheckpointError, match="nowhere: no such folder"):
    checkpoints.initialize_from(tmp_path / "nowhere", fresh, shardings, record, ("generator",))


def test_a_run_started_from_another_trains_and_then_resumes_its_own(tmp_path, cache_dir, caplog):
  train.train_and_evaluate(tiny(cache_dir, **{"train.num_steps": 1}), tmp_path / "source")
  config = tiny(cache_dir, **{"train.num_steps": 1, "init_from": str(tmp_path / "source"),
                              "init_networks": "embedder,generator"})
  with caplog.at_level(logging.INFO):
    state = train.train_and_evaluate(config, tmp_path / "tuned")
  assert int(state.step) == 1
  assert any("initialized embedder, generator from" in r.getMessage() for r in caplog.records)
  caplog.clear()
  config.train.num_steps = 2
  config.init_from = str(tmp_path / "gone")  # not read: the run has its own checkpoint
  with caplog.at_level(logging.INFO):
    state = train.train_and_evaluate(config, tmp_path / "tuned")
  assert int(state.step) == 2
  assert any("config.init_from is not used" in r.getMessage() for r in caplog.records)
