"""The embedded default: trains on the synthetic talking-head corpus, built on first use.

    python -m tfvgan_jax.main --config=configs/synthetic.py --workdir=/tmp/tfvgan_demo

The corpus (procedural morphable model, true coefficients and cameras) is rendered into
`data.synthetic.cache_dir` once, with held-out videos for evaluation. The default fits a 2-core CPU
in about 15 minutes: 64 px frames, small widths, a few hundred steps. Variants:

    --config=configs/synthetic.py:res=128     128 px (slower; a GPU run)
    --config=configs/synthetic.py:tiny        the test suite's config: a few steps in seconds

Any field can be overridden: --config.train.num_steps=2000 --config.data.batch_size=16.
"""

import ml_collections


def get_config(arg=None):
  variant = dict(part.split("=") if "=" in part else (part, True) for part in (arg or "").split(",") if part)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.face_model = "procedural:medium"

  config.data = ml_collections.ConfigDict()
  config.data.videos = ""
  config.data.images = ""
  config.data.sampling = "intra_inter"
  config.data.sigma = 0.5
  config.data.frame_gap = 1
  config.data.batch_size = 8
  config.data.seed = 0
  config.data.num_workers = 0
  config.data.num_threads = 2
  config.data.prefetch = 2
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.cache_dir = "~/.cache/tfvgan_jax/synthetic"
  config.data.synthetic.videos = 96
  config.data.synthetic.frames = 24
  config.data.synthetic.eval_videos = 4
  config.data.synthetic.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.image_size = int(variant.get("res", 64))
  config.model.emb_width = 32
  config.model.emb_downsamples = 2
  config.model.gen_width = 16
  config.model.gen_downsamples = 2
  config.model.gen_res_blocks = 3
  config.model.norm = "spade"
  config.model.attention = True
  config.model.disc_width = 32
  config.model.disc_layers = 3
  config.model.disc_scales = 2
  config.model.spectral_norm = False
  config.model.disc_conditional = True
  config.model.max_width = 128

  config.render = ml_collections.ConfigDict()
  config.render.tolerance = 0.5

  config.loss = ml_collections.ConfigDict()
  config.loss.adversarial = "hinge"
  config.loss.weights = {"adv": 1.0, "app": 1.0, "rec": 10.0, "tmp": 5.0, "fm": 0.0}
  config.loss.rec_target = "appearance"
  config.loss.tmp_region = "face"
  config.loss.tmp_on_inter = False

  config.optim = ml_collections.ConfigDict()
  config.optim.gen_lr = 2e-4
  config.optim.disc_lr = 4e-4
  config.optim.b1 = 0.5
  config.optim.b2 = 0.999
  config.optim.warmup_steps = 0
  config.optim.ema_decay = 0.0

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.fsdp = 1
  config.distributed = False

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 1000
  config.train.log_every = 50
  config.train.eval_every = 250
  config.train.checkpoint_every = 250
  config.train.keep_checkpoints = 3
  config.train.async_checkpoints = True
  config.train.eval_at_start = True

  config.eval = ml_collections.ConfigDict()
  config.eval.videos = ""
  config.eval.num_videos = 4
  config.eval.num_frames = 8
  config.eval.grid_rows = 4

  if variant.get("tiny"):
    config.data.synthetic.videos = 6
    config.data.synthetic.frames = 6
    config.data.synthetic.eval_videos = 2
    config.data.batch_size = 8
    config.model.image_size = 32
    config.model.emb_width = 8
    config.model.emb_downsamples = 2
    config.model.gen_width = 8
    config.model.gen_downsamples = 2
    config.model.gen_res_blocks = 1
    config.model.disc_width = 8
    config.model.disc_layers = 2
    config.model.disc_scales = 2
    config.face_model = "procedural:low"
    config.train.num_steps = 2
    config.train.log_every = 1
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    config.eval.num_videos = 2
    config.eval.num_frames = 2
    config.eval.grid_rows = 2
  return config
