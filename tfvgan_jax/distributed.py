"""One run over several processes: JAX's distributed runtime started from the environment, and a
clean stop when a peer process is lost.

`python -m tfvgan_jax.main ... --config.distributed=True`, started once per process, calls
`initialize(config)` before anything touches the devices. Where the processes come from:

  * JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID, when
    set (a launcher of your own, or two processes on one machine). JAX itself reads only the first
    of the three; the count and the id are read here and passed on.
  * Otherwise JAX's own cluster detection: SLURM (srun), Open MPI, Cloud TPU VMs and Kubernetes
    (JobSet or an indexed Job; needs `pip install jax[k8s]`).

On CPU the cross-process collectives are gloo over TCP (`jax_cpu_collectives_implementation`,
unless the environment chooses another: JAX_CPU_COLLECTIVES_IMPLEMENTATION=mpi).

A lost peer. Every process sends heartbeats to the coordination service on process 0; one that
stays silent for `config.heartbeat_timeout` seconds (30) is declared dead and JAX ends the others
with its own message ("the JAX distributed service detected fatal errors", then the unhealthy
tasks, or "the leader task ... died" when process 0 is the one lost) and SIGABRT, so that no process
waits in a collective whose peer is gone until a scheduler kills it. A killed process usually shows
sooner: its sockets close and the next collective of the others fails at once. `stop_on_lost_peer`
then logs that failure, asks the coordination service which processes are alive (its answer comes
with the same heartbeat verdict) and, if one is lost, logs a line naming it and exits with status
`LOST_PEER_EXIT_CODE` (75, sysexits' "temporary failure"). Which of the two ends the process is a
race (they are told at the same moment): either way the output names the lost process and the end
comes within about `heartbeat_timeout` seconds. Restart every process with the same command and the
run resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Optional

import jax
from absl import logging

COORDINATOR_ADDRESS = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES = "JAX_NUM_PROCESSES"
PROCESS_ID = "JAX_PROCESS_ID"
CPU_COLLECTIVES = "JAX_CPU_COLLECTIVES_IMPLEMENTATION"
# sysexits.h's EX_TEMPFAIL: the run can be restarted as it is.
LOST_PEER_EXIT_CODE = 75
# Beyond the heartbeat timeout: the service checks heartbeats periodically, not continuously.
_VERDICT_MARGIN_S = 15.0


class DistributedSetupError(ValueError):
  """The processes of a run are not set up as the command needs; the message says what to set or do."""


def _process_number(environ: Mapping[str, str], name: str) -> int:
  text = environ[name].strip()
  try:
    return int(text)
  except ValueError:
    raise DistributedSetupError(f"{name}={environ[name]!r} is not a whole number") from None


def launch_settings(environ: Mapping[str, str]) -> tuple[Optional[str], Optional[int], Optional[int]]:
  """(coordinator address, process count, process id) from JAX_* variables; None where unset.

  The count and the id go together; what is unset is left to JAX's cluster detection.

  Raises:
    DistributedSetupError: only one of the count and the id, a value that is not a number, or an
      id outside [0, count).
  """
  address = environ.get(COORDINATOR_ADDRESS) or None
  given = [name for name in (NUM_PROCESSES, PROCESS_ID) if environ.get(name, "").strip()]
  if len(given) == 1:
    missing = PROCESS_ID if given[0] == NUM_PROCESSES else NUM_PROCESSES
    raise DistributedSetupError(f"{given[0]} is set but {missing} is not: set both (and {COORDINATOR_ADDRESS}), "
                                f"or neither to let JAX detect the cluster")
  if not given:
    return address, None, None
  count, index = _process_number(environ, NUM_PROCESSES), _process_number(environ, PROCESS_ID)
  if count < 1 or not 0 <= index < count:
    raise DistributedSetupError(f"{PROCESS_ID}={index} with {NUM_PROCESSES}={count}: the ids are 0 .. {count - 1}")
  return address, count, index


def initialize(config, environ: Optional[Mapping[str, str]] = None) -> None:
  """Joins this process to the run (`jax.distributed.initialize`); before any use of the devices.

  Args:
    config: the run's config; reads `heartbeat_timeout` (seconds).
    environ: the environment (default os.environ).

  Raises:
    DistributedSetupError: the environment names no coordinator and JAX finds no cluster, or the
      JAX_* variables are inconsistent.
  """
  environ = os.environ if environ is None else environ
  address, count, index = launch_settings(environ)
  if not environ.get(CPU_COLLECTIVES):
    # Only the CPU client reads it: on GPU and TPU hosts it changes nothing.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=index,
                               heartbeat_timeout_seconds=int(config.heartbeat_timeout))
  except ValueError as error:
    if "should be defined" not in str(error) and "must be defined" not in str(error):
      raise
    raise DistributedSetupError(
        f"--config.distributed=True, but {error} No cluster was detected (SLURM, Open MPI, Cloud TPU, "
        f"Kubernetes): set {COORDINATOR_ADDRESS}=HOST:PORT (process 0's host), {NUM_PROCESSES} and "
        f"{PROCESS_ID} in each process's environment.") from None
  logging.info("process %d of %d (coordinator %s), %d local device(s) of %d", jax.process_index(),
               jax.process_count(), _coordinator_address(), jax.local_device_count(), jax.device_count())


def _coordinator_address() -> Optional[str]:
  from jax._src import distributed as jax_distributed  # the client is not public API
  return jax_distributed.global_state.coordinator_address


def lost_processes(timeout: float) -> Optional[list[int]]:
  """The processes the coordination service has given up on, or None if it cannot tell.

  The service answers once every process it still counts as alive has asked, or once it has
  declared the silent ones dead (their heartbeat timeout): call it when a peer is suspected lost.
  An unreachable service (process 0 lost) is reported as [0].
  """
  from jax._src import distributed as jax_distributed
  client = jax_distributed.global_state.client
  if client is None:
    return None
  everyone = list(range(jax.process_count()))
  answer: dict = {}

  def ask():
    try:
      answer["live"] = client.get_live_nodes(everyone)
    except Exception as error:  # noqa: BLE001 - any failure to reach the service means it is gone
      answer["error"] = error

  thread = threading.Thread(target=ask, daemon=True, name="lost_processes")
  thread.start()
  thread.join(timeout)
  if "live" in answer:
    return [process for process in everyone if process not in answer["live"]]
  if "error" in answer:
    return [0]
  return None


def _lost_message(lost: list[int], error: BaseException) -> str:
  me, count = jax.process_index(), jax.process_count()
  names = ", ".join(f"process {p}" + (f" (the coordinator, {_coordinator_address()})" if p == 0 else "")
                    for p in lost)
  return (f"process {me} of {count}: lost {names}: stopping. The run can be resumed from its last "
          f"checkpoint by starting every process again with the same command. "
          f"(The failure seen here: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")


@contextlib.contextmanager
def stop_on_lost_peer(config) -> Iterator[None]:
  """Runs the body; if it fails in a run of several processes because a peer is gone, logs which
  one and exits with LOST_PEER_EXIT_CODE.

  Any other failure (one that every process meets, as a non-finite loss) is raised as usual. The
  exit skips the runtime's shutdown, which waits for every process at a barrier that a lost process
  never reaches.

  Args:
    config: the run's config; the coordination service's verdict is awaited for its
      `heartbeat_timeout` and a margin.
  """
  try:
    yield
  except Exception as error:
    if not jax.distributed.is_initialized() or jax.process_count() == 1:
      raise
    timeout = float(config.heartbeat_timeout) + _VERDICT_MARGIN_S
    logging.warning("process %d of %d: %s: %s. If a peer process is lost, the coordination service says "
                    "which within config.heartbeat_timeout (%s s); waiting for its answer", jax.process_index(),
                    jax.process_count(), type(error).__name__, str(error)[:500], config.heartbeat_timeout)
    lost = lost_processes(timeout)
    if not lost:
      raise
    logging.error("%s", _lost_message(lost, error))
    for child in multiprocessing.active_children():  # input workers, if any
      child.terminate()
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(LOST_PEER_EXIT_CODE)


def require_one_process(command: str) -> None:
  """For the commands that work on one process (editing, the evaluation of a checkpoint).

  Raises:
    DistributedSetupError: this process is one of several in a JAX distributed runtime.
  """
  if jax.process_count() > 1:
    raise DistributedSetupError(
        f"{command} runs on one process, and this is process {jax.process_index()} of {jax.process_count()}: "
        f"start it once, on one host, without jax.distributed (training evaluates on every process)")
