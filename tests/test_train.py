"""The real training run on the real default config, shrunk (`configs/synthetic.py:tiny`).

Runs go through `python -m tfvgan_jax.main` in subprocesses where the device count or a SIGKILL
matters, and through `train.train_and_evaluate` in this process otherwise.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from helpers import load_config
from tfvgan_jax import losses, train

pytestmark = pytest.mark.slow  # trains or edits with a real (tiny) checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synthetic.py"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("synthetic_cache"))


def run_main(workdir, cache, *flags, devices=1, wait=True):
  # The environment carries conftest's persistent compilation cache: a resumed run compiles the
  # same programs as the run it resumes.
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
              f"--xla_force_host_platform_device_count={devices}")
  command = [sys.executable, "-m", "tfvgan_jax.main", f"--config={CONFIG}:tiny", f"--workdir={workdir}",
             f"--config.data.synthetic.cache_dir={cache}", *flags]
  if not wait:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result


def scalars(workdir, tag):
  accumulator = event_accumulator.EventAccumulator(str(pathlib.Path(workdir) / "tensorboard"))
  accumulator.Reload()
  return {event.step: event.value for event in accumulator.Scalars(tag)}, accumulator


def restore_params(workdir, step):
  manager = ocp.CheckpointManager(pathlib.Path(workdir) / "checkpoints")
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  state = restored.state
  return jax.tree.leaves({k: state[k] for k in ("params", "disc_params", "variables", "gen_opt", "disc_opt", "step")})


def test_one_and_eight_devices_give_the_same_first_loss(tmp_path, cache_dir, tiny_run):
  # One device: conftest's shared run of the same config (same seed, so the same corpus and init).
  # Eight: the batch split over all 8 devices and the parameters over 2 (mesh data=4 x fsdp=2).
  one, eight = tiny_run[1], tmp_path / "eight"
  run_main(eight, cache_dir, "--config.mesh.data=4", "--config.mesh.fsdp=2", devices=8)
  first = {}
  for name, workdir in (("one", one), ("eight", eight)):
    values, accumulator = scalars(workdir, "loss/generator")
    assert sorted(values) == [1, 2]
    first[name] = values[1]
    # Every term under its own name, the throughput, the learning rates and the evaluation.
    tags = set(accumulator.Tags()["scalars"])
    assert {"loss/adv", "loss/app", "loss/rec", "loss/tmp", "loss/discriminator", "perf/images_per_second",
            "learning_rate/generator", "learning_rate/discriminator", "eval/ssim", "eval/temporal_error"} <= tags
    assert "eval/grid" in accumulator.Tags()["images"]
    grid = np.asarray(Image.open(workdir / "grid.png"))
    assert grid.shape == (2 * 32, 8 * 32, 3)
    assert (workdir / "images" / "grid_000002.png").exists() and (workdir / "images" / "grid_000000.png").exists()
  assert np.isfinite(first["one"])
  np.testing.assert_allclose(first["eight"], first["one"], rtol=1e-5)


# How far a short bfloat16 run's losses may stray from the float32 run's: the totals by 0.5% of their value,
# each term by 3% of its value or 1e-3. Measured on the tiny config's two steps: totals 0.04%, terms at
# most 2.9% (adv, 2.6e-4 of 8.9e-3) and otherwise under 1%.
BFLOAT16_TOTALS_TOLERANCE = 0.005
BFLOAT16_TERMS_TOLERANCE = (0.03, 1e-3)


def test_bfloat16_run_tracks_float32_losses_and_saves_float32(tmp_path, tiny_run):
  config, float32_run = tiny_run  # the same seed, corpus and initial parameters
  mixed = load_config("synthetic", "tiny", **{"model.dtype": "bfloat16",
                                               "data.synthetic.cache_dir": config.data.synthetic.cache_dir})
  train.train_and_evaluate(mixed, tmp_path)
  for tag in ("loss/generator", "loss/discriminator", "loss/adv", "loss/rec", "loss/tmp", "loss/app"):
    exact, rounded = scalars(float32_run, tag)[0], scalars(tmp_path, tag)[0]
    assert sorted(rounded) == sorted(exact) == [1, 2]
    relative, absolute = ((BFLOAT16_TOTALS_TOLERANCE, 0.0) if tag in ("loss/generator", "loss/discriminator")
                          else BFLOAT16_TERMS_TOLERANCE)
    for step in exact:
      assert abs(rounded[step] - exact[step]) <= max(relative * abs(exact[step]), absolute), (tag, step)
  # Parameters, both optimizer states and the batch statistics are saved in float32.
  saved = restore_params(tmp_path, 2)
  assert {leaf.dtype for leaf in saved if np.issubdtype(leaf.dtype, np.floating)} == {np.dtype(np.float32)}


def test_run_killed_with_sigkill_resumes_to_the_same_parameters(tmp_path, cache_dir):
  steps = 12
  common = ["--config.train.checkpoint_every=2", "--config.train.log_every=1", "--config.data.synthetic.eval_videos=0",
            "--config.train.keep_checkpoints=20"]
  reference, killed = tmp_path / "reference", tmp_path / "killed"
  run_main(reference, cache_dir, f"--config.train.num_steps={steps}", *common)

  process = run_main(killed, cache_dir, "--config.train.num_steps=100000", *common, wait=False)
  first_checkpoint = killed / "checkpoints" / "2"
  deadline = time.monotonic() + 300
  while not first_checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  output, _ = process.communicate(timeout=60)
  assert process.returncode == -signal.SIGKILL, output[-3000:]
  manager = ocp.CheckpointManager(killed / "checkpoints")
  interrupted_at = manager.latest_step()
  manager.close()
  assert interrupted_at is not None and 2 <= interrupted_at < steps, f"killed at checkpoint {interrupted_at}"

  resumed = run_main(killed, cache_dir, f"--config.train.num_steps={steps}", *common)
  assert "resumed from" in resumed.stderr and f"at step {interrupted_at}" in resumed.stderr
  expected, got = restore_params(reference, steps), restore_params(killed, steps)
  assert len(expected) == len(got)
  for a, b in zip(expected, got):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, cache_dir, monkeypatch):
  config = load_config(**{"data.synthetic.cache_dir": cache_dir, "data.synthetic.eval_videos": 0,
                          "train.num_steps": 2, "train.checkpoint_every": 2})
  train.train_and_evaluate(config, tmp_path)

  def poisoned(output, target, sample_weight):
    return np.float32(np.nan) * losses.reconstruction_loss_per_sample(output, target).sum()

  monkeypatch.setattr(losses, "reconstruction_loss", poisoned)
  config = load_config(**{"data.synthetic.cache_dir": cache_dir, "data.synthetic.eval_videos": 0,
                          "train.num_steps": 4, "train.checkpoint_every": 1})
  # Step 3's losses are those of the state saved at step 2: resuming it would fail the same way, so
  # it is moved aside (kept), and a resume starts from the one before (here: none).
  with pytest.raises(train.NonFiniteLossError, match=r"loss/rec is nan at step 3.*checkpoint of step 2, which leads "
                     r"straight to it, was moved to .*checkpoints_set_aside/2.*last checkpoint is none"):
    train.train_and_evaluate(config, tmp_path)
  manager = ocp.CheckpointManager(tmp_path / "checkpoints")
  assert manager.all_steps() == []
  manager.close()
  assert (tmp_path / "checkpoints_set_aside" / "2" / "state").is_dir()


def paper_config(name, arg=None):
  return load_config(name, arg)


def test_paper_configs_follow_the_papers():
  uniface, tfvgan = paper_config("voxceleb"), paper_config("ffhq_voxceleb")
  assert (uniface.data.sampling, uniface.data.sigma, uniface.model.image_size, uniface.data.batch_size) == (
      "intra_inter", 0.5, 256, 24)
  assert (tfvgan.data.sampling, tfvgan.data.sigma) == ("video_image", 0.5)
  assert dict(uniface.loss.weights) == {"adv": 10.0, "app": 1.0, "rec": 10.0, "tmp": 5.0, "fm": 0.0, "bg": 0.0}
  assert (uniface.optim.gen_lr, uniface.optim.disc_lr, uniface.optim.b1, uniface.optim.b2) == (1e-4, 4e-4, 0.5, 0.999)
  assert uniface.model.norm == "rcn"
  assert paper_config("voxceleb", "res=128").model.image_size == 128


def test_required_settings_name_the_commands_that_make_them(tmp_path):
  config = paper_config("voxceleb")
  with pytest.raises(ValueError, match=r"no morphable model given.*data_prep\.convert_face_model"):
    train.train_and_evaluate(config, tmp_path)
  config.face_model = str(tmp_path / "missing.npz")
  with pytest.raises(ValueError, match=r"missing\.npz.*no such file"):
    train.train_and_evaluate(config, tmp_path)
  config.face_model = "procedural:low"
  with pytest.raises(ValueError, match=r"data\.videos is required.*data_prep\.build.*data_prep\.synthetic"):
    train.train_and_evaluate(config, tmp_path)


def test_a_run_without_eval_videos_evaluates_on_its_held_out_tails(cache_dir, caplog):
  from tfvgan_jax import face3d
  config = load_config("synthetic", "tiny", **{"data.synthetic.cache_dir": cache_dir})
  model = face3d.load_model(config.face_model)
  data, eval_path = train.resolve_data(config, model)
  assert eval_path != data.videos and train.evaluation_tail(data, eval_path) == 0.0  # its own held-out videos
  config.data.synthetic.eval_videos = 0
  config.data.held_out_tail = 0.5
  data, eval_path = train.resolve_data(config, model)
  assert eval_path == data.videos and train.evaluation_tail(data, eval_path) == 0.5
  data.held_out_tail = 0.0
  with caplog.at_level("WARNING"):
    assert train.evaluation_tail(data, eval_path) == 0.0
  assert any("measures frames the run trains on" in r.getMessage() for r in caplog.records)
