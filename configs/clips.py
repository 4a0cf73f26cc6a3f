"""Fine-tune on a handful of your own clips, starting from a trained run (the demo, or your own).

    python -m data_prep.build --input='clips/**/*.mp4' --out=/data/clips --face_model=procedural:medium --size=128
    python -m tfvgan_jax.main --config=configs/clips.py --workdir=/tmp/clips_run \\
        --config.data.videos=/data/clips/videos --config.init_from=/tmp/tfvgan_demo128

The networks are the demo's (`configs/synthetic.py`), so a demo checkpoint trained at the same size
(`--config=configs/synthetic.py:res=128`) and with the same face model starts the run
(`config.init_from`; a checkpoint of another face model, size or shape is refused). The last 20% of
every clip is never trained on (`data.held_out_tail`) and the run evaluates on those tails: no
separate test set is needed. Samples are drawn as UniFaceGAN draws them: half from one clip
(self-reenactment, with ground truth), half from three clips of three different people (swaps, the
expression from the third). A clip's person is the first folder of its id (`data.people='folder'`:
put each person's clips in a folder, clips/alice/*.mp4); with fewer than three people the run says
so and trains self-reenactment only.

Variants:
    (none)        128 px, batch 16, 20k steps: one GPU (a few hours).
    :cpu          128 px, batch 8, 1200 steps: about an hour on a 2-core CPU, for a look.
    :res=N        crops of N px (build the records with --size=N, and start from a run of that size).

Any field can be overridden: --config.train.num_steps=5000 --config.face_model=face468.npz (with
records built with that model, and then --config.init_from a run of that model, or none: from
scratch).
"""

from configs import common, synthetic

VARIANTS = {"res": int, "cpu": bool}


def get_config(arg=None):
  variant = common.parse_variant(arg, VARIANTS)
  config = synthetic.get_config(f"res={variant.get('res', 128)}")
  del config.data["synthetic"]  # the records come from data_prep.build: data.videos is required
  config.data.videos = ""
  config.data.held_out_tail = 0.2
  config.data.people = "folder"  # clips/alice/*.mp4 are one person: swaps pair different people
  config.data.inter_expression = "expression"
  config.data.batch_size = 16
  config.data.num_workers = 2

  config.train.num_steps = 20_000
  config.train.log_every = 50
  config.train.eval_every = config.train.checkpoint_every = 1000
  config.eval.videos = ""  # the held-out tails of data.videos
  config.eval.num_videos = 0  # every clip
  config.eval.num_frames = 8
  config.eval.grid_rows = 6

  if variant.get("cpu"):
    config.data.batch_size = 8
    config.data.num_workers = 0
    config.train.num_steps = 1200
    config.train.eval_every = config.train.checkpoint_every = 200
  return config
