"""Several JAX processes, for real: `python -m tfvgan_jax.main --config.distributed=True` started as
two processes on 127.0.0.1 (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; gloo
collectives on CPU) trains as one process holding the same devices, and a lost peer stops the run.

Every process writes its output to a file (no pipe to fill) and is killed, with its group, when a
test ends or overruns its deadline.
"""

import contextlib
import importlib.util
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorboard.backend.event_processing import event_accumulator

from tfvgan_jax import distributed, face3d, train

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synthetic.py"
RUN_TIMEOUT_S = 420


def test_launch_settings_read_the_process_count_and_id_that_jax_does_not():
  assert distributed.launch_settings({}) == (None, None, None)  # left to JAX's cluster detection
  assert distributed.launch_settings({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
                                      "JAX_PROCESS_ID": " 3"}) == ("10.0.0.1:1234", 4, 3)
  with pytest.raises(distributed.DistributedSetupError, match="JAX_NUM_PROCESSES is set but JAX_PROCESS_ID is not"):
    distributed.launch_settings({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"})
  with pytest.raises(distributed.DistributedSetupError, match="JAX_PROCESS_ID='one' is not a whole number"):
    distributed.launch_settings({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "one"})
  with pytest.raises(distributed.DistributedSetupError, match=r"JAX_PROCESS_ID=2 with JAX_NUM_PROCESSES=2.*0 \.\. 1"):
    distributed.launch_settings({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"})


def test_distributed_without_a_cluster_says_what_to_set(tmp_path):
  cluster = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_", "OMPI_", "KUBERNETES_")
  env = {name: value for name, value in os.environ.items() if not name.startswith(cluster)}
  result = subprocess.run([sys.executable, "-m", "tfvgan_jax.main", f"--config={CONFIG}:tiny", f"--workdir={tmp_path}",
                           "--config.distributed=True"], cwd=ROOT, env=dict(env, JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert "error: --config.distributed=True, but coordinator_address should be defined" in result.stderr
  assert "set JAX_COORDINATOR_ADDRESS=HOST:PORT (process 0's host), JAX_NUM_PROCESSES and JAX_PROCESS_ID" in result.stderr


def test_editing_and_checkpoint_evaluation_refuse_several_processes(monkeypatch):
  distributed.require_one_process("python -m tfvgan_jax.edit")
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(distributed.DistributedSetupError, match=r"tfvgan_jax\.edit runs on one process.*of 2"):
    distributed.require_one_process("python -m tfvgan_jax.edit")


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  """The tiny corpus, built here once: processes that start together would each build it."""
  spec = importlib.util.spec_from_file_location("synthetic_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tiny")
  config.data.synthetic.cache_dir = str(tmp_path_factory.mktemp("multiprocess_corpus"))
  train.resolve_data(config, face3d.load_model(config.face_model))
  return config.data.synthetic.cache_dir


class Processes:
  """The processes of one run: `processes` x `devices` simulated CPU devices, on loopback."""

  def __init__(self, workdir, cache, processes, devices, *flags, name="run"):
    self.workdir = pathlib.Path(workdir)
    self.logs = [self.workdir.parent / f"{self.workdir.name}.{name}.{index}.log" for index in range(processes)]
    port = free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
              f"--xla_force_host_platform_device_count={devices}")
    command = [sys.executable, "-m", "tfvgan_jax.main", f"--config={CONFIG}:tiny", f"--workdir={workdir}",
               f"--config.data.synthetic.cache_dir={cache}", *flags]
    if processes > 1:
      command.append("--config.distributed=True")
      env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}",
                 JAX_NUM_PROCESSES=str(processes))
    self.started = time.monotonic()
    self.popens = []
    for index, log in enumerate(self.logs):
      with open(log, "w") as out:
        self.popens.append(subprocess.Popen(command, cwd=ROOT, env=dict(env, JAX_PROCESS_ID=str(index)), stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True))

  def output(self, index: int) -> str:
    return self.logs[index].read_text()

  def wait(self, index: int, deadline: float) -> int:
    """The exit status of process `index`; kills every process if it is not done by `deadline`."""
    try:
      return self.popens[index].wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f"process {index} still running after {time.monotonic() - self.started:.0f} s:\n"
                  f"{self.output(index)[-3000:]}")

  def finish(self) -> float:
    """Waits for every process to succeed; returns the seconds the run took."""
    deadline = self.started + RUN_TIMEOUT_S
    for index in range(len(self.popens)):
      code = self.wait(index, deadline)
      if code != 0:
        self.kill()
        pytest.fail(f"process {index} exited with {code}:\n{self.output(index)[-4000:]}")
    return time.monotonic() - self.started

  def kill(self) -> None:
    for popen in self.popens:
      if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
          os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=30)


@pytest.fixture
def launch():
  """Starts runs (`Processes`) and kills whatever is left of them when the test ends."""
  runs = []

  def start(*args, **kwargs):
    runs.append(Processes(*args, **kwargs))
    return runs[-1]

  yield start
  for run in runs:
    run.kill()


def final_state(workdir, step) -> dict:
  """{path: array} of the checkpointed train state, restored onto this process's one device."""
  manager = ocp.CheckpointManager(pathlib.Path(workdir) / "checkpoints",
                                  item_handlers={"state": ocp.StandardCheckpointHandler()})
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                        manager.item_metadata(step).state)
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
  manager.close()
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(state)}


def logged(workdir) -> tuple[dict, event_accumulator.EventAccumulator]:
  """{tag: {step: value}} of every scalar in workdir/tensorboard."""
  accumulator = event_accumulator.EventAccumulator(str(pathlib.Path(workdir) / "tensorboard"))
  accumulator.Reload()
  return {tag: {event.step: event.value for event in accumulator.Scalars(tag)}
          for tag in accumulator.Tags()["scalars"]}, accumulator


def cancelled_by_normalization(path: str) -> bool:
  """The generator's convolution biases that a normalization follows (instance norm after the
  stem, the downsampling and the residual convs, the conditional norm after the upsampling convs):
  it subtracts each channel's mean, so their exact gradient is zero, and Adam turns the rounding
  noise left in it into steps of +-lr."""
  return "['generator']" in path and path.endswith("['bias']['value']") and any(
      f"['generator']['{name}']" in path for name in ("stem", "down", "res", "up"))


@pytest.mark.slow
def test_two_processes_of_two_devices_train_as_one_process_of_four(tmp_path, cache_dir, launch):
  # Batch split over 4 devices, parameters over 2 (mesh data=2 x fsdp=2), evaluation at steps 0 and 2.
  # Started together: a lone process compiles on one of CI's two cores.
  one, two = tmp_path / "one_process", tmp_path / "two_processes"
  runs = {"1x4": launch(one, cache_dir, 1, 4, "--config.mesh.fsdp=2"),
          "2x2": launch(two, cache_dir, 2, 2, "--config.mesh.fsdp=2")}
  print(f"seconds per run: { {name: round(run.finish()) for name, run in runs.items()} }")

  # One checkpoint of the run in the shared workdir, holding both processes' input positions.
  assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["2"]
  data_files = sorted(p.name for p in (two / "checkpoints" / "2" / "data").iterdir())
  assert any("process_0" in name for name in data_files) and any("process_1" in name for name in data_files), data_files
  # TensorBoard and the grids come from process 0 alone (one event file: one writer).
  assert len(list((two / "tensorboard").glob("events.out.tfevents.*"))) == 1
  assert sorted(p.name for p in (two / "images").iterdir()) == ["grid_000000.png", "grid_000002.png"]

  # The same losses at every step and the same evaluation: both processes' slices are the global
  # batch. Not bit-identical: gloo adds the four devices' partial sums in another order than
  # XLA's in-process all-reduce (float addition is not associative), so values agree to rounding
  # (the evaluation after the update to ~3e-6: it reads the batch-norm statistics that the
  # cancelled biases below shift).
  expected, _ = logged(one)
  got, accumulator = logged(two)
  assert "eval/grid" in accumulator.Tags()["images"]
  for tag in expected:
    if tag.startswith(("loss/", "grad_norm/", "eval/", "data/")):
      assert sorted(got[tag]) == sorted(expected[tag]), tag
      for step in expected[tag]:
        np.testing.assert_allclose(got[tag][step], expected[tag][step], rtol=1e-5, atol=1e-5, err_msg=f"{tag} {step}")

  reference, state = final_state(one, 2), final_state(two, 2)
  assert sorted(state) == sorted(reference)
  cancelled = [path for path in reference if cancelled_by_normalization(path)]
  assert len(cancelled) >= 3 * 7  # params, Adam's mu and nu of the 7 biases
  for path in reference:
    if path in cancelled:
      assert state[path].shape == reference[path].shape and np.all(np.isfinite(state[path])), path
    elif "['mu']" in path or "['nu']" in path:
      # Adam's moments hold the gradients themselves: a bias's gradient sums B x H x W terms of both
      # signs, so the summation order moves a small sum by more than 1e-5 of itself (seen: 1.2e-5 on
      # a D bias moment of 3.5e-3); the parameters those moments produced agree to 1e-5.
      np.testing.assert_allclose(state[path], reference[path], rtol=1e-4, atol=5e-5, err_msg=path)
    else:
      np.testing.assert_allclose(state[path], reference[path], rtol=1e-5, atol=1e-5, err_msg=path)


@pytest.mark.slow
def test_lost_peer_stops_the_other_and_a_restart_resumes_exactly(tmp_path, cache_dir, launch):
  steps = 6
  common = ["--config.train.checkpoint_every=2", "--config.train.keep_checkpoints=20",
            "--config.data.synthetic.eval_videos=0"]
  reference, killed = tmp_path / "reference", tmp_path / "killed"
  # The one-process reference runs beside the first two-process run (a lone process compiles on one
  # core). The heartbeat timeout is set low to keep the test short; the README measures the default.
  uninterrupted = launch(reference, cache_dir, 1, 2, f"--config.train.num_steps={steps}", *common)
  run = launch(killed, cache_dir, 2, 1, "--config.train.num_steps=100000", "--config.heartbeat_timeout=10", *common,
               name="first")
  first_checkpoint = killed / "checkpoints" / "2"
  deadline = time.monotonic() + RUN_TIMEOUT_S
  while not first_checkpoint.exists() and time.monotonic() < deadline and all(p.poll() is None for p in run.popens):
    time.sleep(0.02)
  assert first_checkpoint.exists(), run.output(0)[-3000:] + run.output(1)[-3000:]
  run.popens[1].send_signal(signal.SIGKILL)
  lost_at = time.monotonic()
  code = run.wait(0, lost_at + 60)
  seconds = {"2x1 until killed": lost_at - run.started, "peer lost -> exit": time.monotonic() - lost_at}
  output = run.output(0)
  # Ended by our handler (status 75) or by JAX's own error propagation (SIGABRT), whichever the
  # coordination service's verdict reached first; both name the lost process.
  assert code in (distributed.LOST_PEER_EXIT_CODE, -signal.SIGABRT), output[-4000:]
  assert ("process 0 of 2: lost process 1: stopping" in output
          or re.search(r"stopped sending heartbeats\):\s*1\b", output)), output[-4000:]
  assert run.wait(1, time.monotonic() + 30) == -signal.SIGKILL
  manager = ocp.CheckpointManager(killed / "checkpoints")
  interrupted_at = manager.latest_step()
  manager.close()
  assert interrupted_at in (2, 4), f"killed at checkpoint {interrupted_at}"

  seconds["1x2"] = uninterrupted.finish()
  restarted = launch(killed, cache_dir, 2, 1, f"--config.train.num_steps={steps}", *common, name="restarted")
  seconds["2x1 restarted"] = restarted.finish()
  print(f"seconds: { {name: round(value, 1) for name, value in seconds.items()} }")
  assert f"at step {interrupted_at}" in restarted.output(0) and "resumed from" in restarted.output(1)
  # Two processes of one device each: bit-identical to one process of two devices.
  expected, got = final_state(reference, steps), final_state(killed, steps)
  assert sorted(got) == sorted(expected)
  for path in expected:
    np.testing.assert_array_equal(got[path], expected[path], err_msg=path)
