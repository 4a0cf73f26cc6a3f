"""The embedded default: the paper config (`voxceleb.py`) shrunk to train on the synthetic corpus.

    python -m tfvgan_jax.main --config=configs/synthetic.py --workdir=/tmp/tfvgan_demo

The corpus (procedural morphable model, true coefficients and cameras) is rendered into
`data.synthetic.cache_dir` once, with held-out videos for evaluation. The default fits a 2-core CPU
in about 15 minutes: 64 px frames, small widths, 1000 steps. Variants:

    --config=configs/synthetic.py:res=128     128 px (slower; a GPU run)
    --config=configs/synthetic.py:tiny        the test suite's config: a few steps in seconds

Departures from the papers, for a short CPU run: the generator normalizes with SPADE, not RCN
(RCN's cross-regional transfer gives the face features the small spread of the smooth synthetic
backgrounds, and the face is learned far more slowly; `--config.model.norm=rcn` trains it), the
adversarial weight is 1 instead of 10, G's learning rate 2e-4, and D has 2 scales and no spectral
norm. Two downsamplings keep G's bottleneck at 16 x 16, as the papers' four do at 256 px.

The recipe, chosen by measurement (README, Ablations; `benchmarks/ablations.py`): P at the papers'
relative scale (1/16 of the frame: 4 x 4 here, their 16 x 16 at 256 px), too coarse to carry X_p's
face; G's decoder with skip paths from its encoder of R and from the hint image
(`model.gen_skips='both'`), which bring background, hair and the render's detail at full
resolution; and D's real pairs from intra samples only (`loss.disc_real='intra'`).
`--config.model.gen_skips=none --config.loss.disc_real=all` is the papers' G and D.

Any field can be overridden: --config.train.num_steps=2000 --config.data.batch_size=16.
"""

import ml_collections

from configs import common, voxceleb

# The variants this file knows (`common.parse_variant`).
VARIANTS = {"res": int, "tiny": bool}


def get_config(arg=None):
  variant = common.parse_variant(arg, VARIANTS)
  config = voxceleb.paper_config()
  config.face_model = "procedural:medium"

  config.data.batch_size = 8
  config.data.num_workers = 0
  config.data.num_threads = 2
  config.data.prefetch = 2
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.cache_dir = "~/.cache/tfvgan_jax/synthetic"
  config.data.synthetic.videos = 96
  config.data.synthetic.frames = 24
  config.data.synthetic.eval_videos = 4
  config.data.synthetic.seed = 0

  config.model.image_size = variant.get("res", 64)
  config.model.emb_width = 32
  config.model.emb_downsamples = 4
  config.model.gen_skips = "both"
  config.model.gen_width = 16
  config.model.gen_downsamples = 2
  config.model.gen_res_blocks = 3
  config.model.norm = "spade"
  config.model.disc_width = 32
  config.model.disc_scales = 2
  config.model.spectral_norm = False
  config.model.max_width = 128

  config.loss.weights["adv"] = 1.0
  config.loss.disc_real = "intra"
  config.optim.gen_lr = 2e-4
  config.optim.ema_decay = 0.0

  config.train.num_steps = 1000
  config.train.log_every = 50
  config.train.eval_every = 250
  config.train.checkpoint_every = 250
  config.train.keep_checkpoints = 3

  config.eval.num_videos = 4
  config.eval.num_frames = 8
  config.eval.grid_rows = 4

  if variant.get("tiny"):
    config.face_model = "procedural:low"
    config.data.synthetic.videos = 6
    config.data.synthetic.frames = 6
    config.data.synthetic.eval_videos = 2
    config.model.image_size = 32
    config.model.emb_width = config.model.gen_width = config.model.disc_width = 8
    config.model.gen_res_blocks = 1
    config.model.disc_layers = 2
    config.train.num_steps = 2
    config.train.log_every = 1
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    config.eval.num_videos = 2
    config.eval.num_frames = 2
    config.eval.grid_rows = 2
  return config
