"""Trains the deep blending network: `python -m tfvgan_jax.main --config=configs/synthetic.py --workdir=DIR`.

--config is an ml_collections config file (`get_config(arg)`; a variant after a colon, e.g.
`configs/synthetic.py:res=128`); any field can be overridden with `--config.train.num_steps=100`.
Running again with the same --workdir resumes from its latest checkpoint.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from tfvgan_jax import cli, distributed, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "training config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, TensorBoard logs and image grids go")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config.distributed:
    # JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or cluster detection (SLURM,
    # TPU pods, Kubernetes); must run before anything touches the devices.
    distributed.initialize(config)
  logging.info("config:\n%s", config)
  with distributed.stop_on_lost_peer(config):
    train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
