"""UniFaceGAN on VoxCeleb2: intra/inter-video sampling (sigma = 0.5), 256 px, batch 24.

    python -m tfvgan_jax.main --config=configs/voxceleb.py --workdir=gs://BUCKET/runs/voxceleb \\
        --config.face_model=/data/bfm_3ddfa.npz --config.data.videos=/data/records/voxceleb2_train \\
        --config.eval.videos=/data/records/voxceleb2_test

The morphable model and the records are required settings:
  face_model   a native .npz: `python -m data_prep.convert_face_model --format=3ddfa_v2 ...`
  data.videos  frame records of the training videos, fitted with that model:
               `python -m data_prep.build --input='DIR/**/*.mp4' --out=DIR --face_model=PATH`;
               eval.videos the same for held-out test videos.

Variants: `:res=128` (a quarter of the pixels), `:runlocal` (a few steps at 64 px on a laptop).
The networks are sized as in the papers (64-wide first stages, 4 downsamplings, 9 residual blocks),
the loss weights are eq. 18's (adv 10, app 1, rec 10, tmp 5) and the learning rates DESIGN.md
choice 7's (G and E 1e-4, D 4e-4, betas 0.5 / 0.999).
"""

import ml_collections

from configs import common

# The variants this file knows (`common.parse_variant`).
VARIANTS = {"res": int, "runlocal": bool}


def get_config(arg=None):
  variant = common.parse_variant(arg, VARIANTS)
  return paper_config(variant)


def paper_config(variant: dict | None = None):
  """The papers' config; `variant` is a parsed `VARIANTS` dict (configs that build on this one pass
  the keys they share with it)."""
  variant = variant or {}
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.face_model = ""
  # Start from another run's networks (its --workdir, checkpoints/ or checkpoints/STEP folder): the
  # parameters and variables of `init_networks` ('all', or some of embedder,generator,discriminator)
  # and their EMA, with fresh optimizer states, step 0 and this run's data order. Same face model,
  # image size and network shapes required. A run that has checkpoints of its own resumes them.
  config.init_from = ""
  config.init_networks = "all"

  config.data = ml_collections.ConfigDict()
  config.data.videos = ""
  config.data.images = ""
  config.data.sampling = "intra_inter"
  config.data.sigma = 0.5
  # Whose expression inter-video samples take: 'appearance' (X_e = X_p) or 'expression' (a third
  # video, UniFaceGAN eq. 2).
  config.data.inter_expression = "appearance"
  config.data.frame_gap = 1
  # How videos' people are told apart for inter-video samples: 'video' (each video its own, the
  # papers') or 'folder' (the first folder of the video's id: clips/alice/*.mp4 are one person).
  config.data.people = "video"
  # Fraction of each video's frames, at its end, never trained on; with eval.videos empty (or the
  # same dataset) the run evaluates on these tails: a handful of clips, no separate test set.
  config.data.held_out_tail = 0.0
  config.data.batch_size = 24
  config.data.seed = 0
  config.data.num_workers = 8
  config.data.num_threads = 4
  config.data.prefetch = 4

  config.model = ml_collections.ConfigDict()
  config.model.image_size = int(variant.get("res", 256))
  config.model.emb_width = 64
  config.model.emb_downsamples = 4
  config.model.gen_width = 64
  config.model.gen_downsamples = 4
  config.model.gen_res_blocks = 9
  config.model.norm = "rcn"
  config.model.rcn_alpha_init = 0.8
  config.model.rcn_beta_init = 0.1
  config.model.attention = True
  # What G's decoder takes besides its features (`models.generator.GEN_SKIPS`): 'none' (the papers),
  # 'hint' (the hint image at each stage: background and hair at full resolution), 'encoder' (U-Net
  # skips from G's encoder of R), or 'both': the ablation's winner (README, Ablations).
  config.model.gen_skips = "both"
  # What G outputs (`models.generator.GEN_OUTPUTS`): 'image' (the papers: every pixel drawn by G) or
  # 'residual' (a correction of the scene's render and hint, `generator.residual_over_scene`).
  config.model.gen_output = "image"
  config.model.disc_width = 64
  config.model.disc_layers = 3
  config.model.disc_scales = 3
  config.model.spectral_norm = True
  config.model.disc_conditional = True
  config.model.max_width = 512
  # Convolutions and matmuls in 'bfloat16' or 'float32' (the papers'); 'auto' is bfloat16 on GPU and
  # TPU, float32 on CPU (`models.compute_dtype`). Parameters, optimizer states and checkpoints are
  # float32 either way.
  config.model.dtype = "auto"

  config.render = ml_collections.ConfigDict()
  config.render.tolerance = 0.5
  # Extra chunks per frame of the rasterizer: 'auto' is exact for any face; a number N is a fixed
  # pool (no loop) whose overflows are logged as render/overflow_frames (`render.rasterize`).
  config.render.capacity = "auto"
  # Re-shade R from X_i's light to the light of the frame the output is pasted into (second-order
  # spherical harmonics fitted to both frames, `inference.reshade_render`); the papers' R keeps
  # X_i's shading and leaves the light to G.
  config.render.relight = False

  config.loss = ml_collections.ConfigDict()
  config.loss.adversarial = "hinge"
  config.loss.weights = {"adv": 10.0, "app": 1.0, "rec": 10.0, "tmp": 5.0, "fm": 0.0, "bg": 0.0}
  config.loss.rec_target = "appearance"
  # Which outputs G's adversarial term covers: 'all' (the papers) or 'intra' (`losses.ADV_SAMPLES`).
  config.loss.adv_samples = "all"
  config.loss.tmp_region = "face"
  config.loss.tmp_on_inter = False
  # What E sees in L_app: 'frame' (the papers: E(Y) against E(X_p), faces included) or 'background'
  # (both with the face region blanked, so that on inter samples L_app does not pull Y's face,
  # expression included, toward X_p's own).
  config.loss.app_region = "frame"
  # Which samples give D its real X_p: 'all' (the papers), or 'intra' (a conditioned D never sees a
  # real pair of two people against a fake pair of one): the ablation's winner (README, Ablations).
  config.loss.disc_real = "intra"

  config.optim = ml_collections.ConfigDict()
  config.optim.gen_lr = 1e-4
  config.optim.disc_lr = 4e-4
  config.optim.b1 = 0.5
  config.optim.b2 = 0.999
  config.optim.warmup_steps = 0
  config.optim.ema_decay = 0.999
  # G's batch statistics for the EMA parameters: 'train' (the trained network's running ones) or
  # 'average' (averaged with the EMA's decay).
  config.optim.ema_batch_stats = "train"

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.fsdp = 1
  config.distributed = False
  config.heartbeat_timeout = 30  # s of silence after which a process counts as lost (distributed runs)

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 500_000
  config.train.log_every = 100
  config.train.eval_every = 5_000
  config.train.checkpoint_every = 5_000
  config.train.keep_checkpoints = 5
  config.train.async_checkpoints = True
  config.train.eval_at_start = True
  # JAX's persistent compilation cache: 'auto' ($JAX_COMPILATION_CACHE_DIR, else
  # ~/.cache/tfvgan_jax/jax_cache), '' (off) or a folder. A resumed or repeated run reads the step
  # from it instead of compiling it again (`tfvgan_jax.compilation`).
  config.train.compilation_cache = "auto"

  config.eval = ml_collections.ConfigDict()
  config.eval.videos = ""
  config.eval.num_videos = 16
  config.eval.num_frames = 8
  config.eval.grid_rows = 8

  if variant.get("runlocal"):
    config.model.image_size = 64
    config.model.gen_width = config.model.emb_width = config.model.disc_width = 16
    config.model.gen_downsamples = 3
    config.model.emb_downsamples = 2
    config.model.gen_res_blocks = 2
    config.data.batch_size = 4
    config.data.num_workers = 0
    config.train.num_steps = 20
    config.train.log_every = config.train.eval_every = config.train.checkpoint_every = 10
    config.eval.num_videos = 2
  return config
