"""The recipe ablations at equal compute, measured on the synthetic ground-truth evaluation.

    python benchmarks/ablations.py --workdir=/tmp/ablations                      # every variant, 2 seeds
    python benchmarks/ablations.py --workdir=/tmp/abl --variants=before,intra_relative_both --seeds=1 --steps=200

Each variant is the demo config (`configs/synthetic.py`, its size and its steps unless --steps says
otherwise) with the recipe it had before this ablation chose its defaults (`BASE`, so that every
run keeps its meaning), and then a few fields changed (`VARIANTS`); it is trained once per seed
(config.seed and config.data.seed), then evaluated by `tfvgan_jax.evaluate.evaluate_synthetic` on held-out synthetic
videos (--eval_seed). The table gives, per variant, the mean and the spread (sample standard
deviation over seeds, '±', blank for one seed) of:

  self SSIM          self-reenactment SSIM against the truth, whole crop
  self PSNR face     self-reenactment PSNR on the face
  swap PSNR face     swap PSNR on the face
  swap ID >0         share of swap samples with a positive identity margin
  dis. exp >0        share of disentangled-manipulation samples with a positive expression margin
  self E_tmp         self-reenactment temporal warping error (x 1e3)

A finished run (its last checkpoint present) is evaluated again without retraining, so an
interrupted ablation resumes. DIR/ablations.md and DIR/ablations.json hold the table and every
run's full results. Another held-out set (--num_videos, --num_frames, --eval_seed) is evaluated
into ground_truth_v{V}_f{F}_s{S}/ and tabled in ablations_v{V}_f{F}_s{S}.md beside the default's:

    python benchmarks/ablations.py --workdir=DIR --table_only --variants=before,intra_relative_both \
        --num_videos=32                        # the finished runs on four times the held-out videos
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import numpy as np

# The demo's recipe before the ablation (`configs/synthetic.py` now takes `intra_relative_both`'s
# fields): every variant starts from it.
BASE = {"loss.disc_real": "all", "model.emb_downsamples": 2, "model.gen_skips": "none"}

# name -> {config path: value} on top of configs/synthetic.py with BASE; 'before' is BASE alone
# (the demo until the ablation chose its defaults).
VARIANTS = {
    "before": {},
    "inter_expression": {"data.inter_expression": "expression"},
    "disc_unconditional": {"model.disc_conditional": False},
    "disc_real_intra": {"loss.disc_real": "intra"},
    "feature_matching": {"loss.weights.fm": 10.0},
    "tmp_frame": {"loss.tmp_region": "frame"},
    "tmp_off": {"loss.weights.tmp": 0.0},
    "appearance_32px": {"model.emb_downsamples": 1},
    # P at 1/16 of the frame (4 x 4 at 64 px), the papers' 16 x 16 at 256 px: the demo's two
    # downsamplings give 1/4, a code fine enough to carry X_p's face (X_p is the ground truth of
    # intra samples, so E can learn to pass its face through).
    "appearance_relative": {"model.emb_downsamples": 4},
    "appearance_8px": {"model.emb_downsamples": 3},
    "rcn": {"model.norm": "rcn"},
    "rcn_alpha_0.5": {"model.norm": "rcn", "model.rcn_alpha_init": 0.5},
    "adain": {"model.norm": "adain"},
    "sigma_0": {"data.sigma": 0.0},
    "sigma_1": {"data.sigma": 1.0},
    "papers": {"data.inter_expression": "expression", "model.disc_conditional": False, "loss.tmp_region": "frame",
               "model.norm": "rcn"},
    # The papers' choices with P at their relative scale too (what 'papers' leaves at the demo's 1/4).
    "papers_relative": {"data.inter_expression": "expression", "model.disc_conditional": False,
                        "loss.tmp_region": "frame", "model.norm": "rcn", "model.emb_downsamples": 4},
    # The two single switches that moved identity and expression most, together: D's real images from
    # intra samples only, and P at the papers' relative scale (1/16) or at 1/8 of the frame.
    "intra_relative": {"loss.disc_real": "intra", "model.emb_downsamples": 4},
    "intra_8px": {"loss.disc_real": "intra", "model.emb_downsamples": 3},
    # G's decoder takes the hint image at each stage: background and hair at full resolution without
    # the face, so P can stay coarse (no face detail to pass on) and the whole crop stays sharp.
    "hint_skips": {"model.gen_skips": "hint"},
    "intra_relative_hint": {"loss.disc_real": "intra", "model.emb_downsamples": 4, "model.gen_skips": "hint"},
    # ... and G's encoder features of R too (U-Net skips: R carries the source's identity, so these
    # are safe for swaps as well).
    "intra_relative_both": {"loss.disc_real": "intra", "model.emb_downsamples": 4, "model.gen_skips": "both"},
    # L_tmp off on those two (the papers' Table III, on the recipe a default would take).
    "intra_relative_hint_tmp_off": {"loss.disc_real": "intra", "model.emb_downsamples": 4, "model.gen_skips": "hint",
                                    "loss.weights.tmp": 0.0},
    "intra_relative_both_tmp_off": {"loss.disc_real": "intra", "model.emb_downsamples": 4, "model.gen_skips": "both",
                                    "loss.weights.tmp": 0.0},
    # The defaults with X_e from a third video (the papers' eq. 2: disentangled manipulation is
    # trained), and with L_app blind to the face (on inter samples the papers' L_app pulls Y's face,
    # expression included, toward X_p's own), each alone and together.
    "both_inter_expression": {"loss.disc_real": "intra", "model.emb_downsamples": 4, "model.gen_skips": "both",
                              "data.inter_expression": "expression"},
    "both_app_background": {"loss.disc_real": "intra", "model.emb_downsamples": 4, "model.gen_skips": "both",
                            "loss.app_region": "background"},
    "both_inter_app_background": {"loss.disc_real": "intra", "model.emb_downsamples": 4, "model.gen_skips": "both",
                                  "data.inter_expression": "expression", "loss.app_region": "background"},
    # The defaults with G's output a correction of the scene's R + M (`model.gen_output='residual'`):
    # what the scene has sharp (the kept frame, the textured face) needs no pass through G's convolutions.
    "both_residual": {"loss.disc_real": "intra", "model.emb_downsamples": 4, "model.gen_skips": "both",
                      "model.gen_output": "residual"},
    # ... with L_app blind to the face: on inter samples the frame's L_app asks E(Y) for X_p's face,
    # which a residual G met with saturated high-frequency patches on the swapped face.
    "both_residual_app_background": {"loss.disc_real": "intra", "model.emb_downsamples": 4,
                                     "model.gen_skips": "both", "model.gen_output": "residual",
                                     "loss.app_region": "background"},
    # ... which moved the patches to the background's border, where E now compares Y with X_p: L_app
    # through E (trained alongside G, cheap to fool) is what they answer. The residual G without it:
    # the scene already carries X_p's background, hair and pose.
    "both_residual_app_off": {"loss.disc_real": "intra", "model.emb_downsamples": 4, "model.gen_skips": "both",
                              "model.gen_output": "residual", "loss.weights.app": 0.0},
    # ... which made the patches larger, in the background. A conditional D could tell inter fakes
    # by their background (its real pairs, intra samples, always share X_i's; its inter fakes never
    # do): the papers' D sees the image alone (eq. 8/10: D(Y)).
    "both_residual_unconditional": {"loss.disc_real": "intra", "model.emb_downsamples": 4,
                                    "model.gen_skips": "both", "model.gen_output": "residual",
                                    "model.disc_conditional": False},
    # ... which took the patches away and let the face drift to the target's colouring (L_app on the
    # frame asks E(Y) for X_p's face): the unconditional D with L_app blind to the face (the patches
    # came back, over the face).
    "both_residual_unconditional_app_background": {"loss.disc_real": "intra", "model.emb_downsamples": 4,
                                                   "model.gen_skips": "both", "model.gen_output": "residual",
                                                   "model.disc_conditional": False, "loss.app_region": "background"},
    # ... which brought them back over the face. Off the face, an inter sample's Y is to be the frame
    # it is pasted into, X_p's, which the hint shows G and no loss asks of it: L_rec there
    # (`loss.weights.bg`), on the best of the residual combinations.
    "both_residual_app_background_bg": {"loss.disc_real": "intra", "model.emb_downsamples": 4,
                                        "model.gen_skips": "both", "model.gen_output": "residual",
                                        "loss.app_region": "background", "loss.weights.bg": 10.0},
    # (which moved the patches onto the swapped faces and lowered every column.)
    # R re-shaded to the light of the frame the output is pasted into (`render.relight`): the
    # scene's own swaps come 4-5 dB nearer the truth on the face, and its expression margin turns
    # positive more often (benchmarks/margin_references.py). On the defaults, and on the residual G
    # whose inter outputs follow the scene.
    # The residual G's patches answer a D conditioned on X_i whose real pairs (intra) always share
    # X_i's background while its inter fakes never do: G's adversarial term on intra outputs only.
    "both_residual_app_background_adv_intra": {"loss.disc_real": "intra", "model.emb_downsamples": 4,
                                               "model.gen_skips": "both", "model.gen_output": "residual",
                                               "loss.app_region": "background", "loss.adv_samples": "intra"},
    "both_relight": {"loss.disc_real": "intra", "model.emb_downsamples": 4, "model.gen_skips": "both",
                     "render.relight": True},
    "both_residual_app_background_relight": {"loss.disc_real": "intra", "model.emb_downsamples": 4,
                                             "model.gen_skips": "both", "model.gen_output": "residual",
                                             "loss.app_region": "background", "render.relight": True},
    # ... with G's adversarial term on intra outputs only.
    "both_residual_app_background_relight_adv_intra": {
        "loss.disc_real": "intra", "model.emb_downsamples": 4, "model.gen_skips": "both",
        "model.gen_output": "residual", "loss.app_region": "background", "render.relight": True,
        "loss.adv_samples": "intra"},
}
# (label, task, key, scale) of the table's columns.
COLUMNS = (
    ("self SSIM", "self_reenactment", "ssim", 1.0),
    ("self PSNR face", "self_reenactment", "psnr_face", 1.0),
    ("swap PSNR face", "swap", "psnr_face", 1.0),
    ("swap ID >0", "swap", "identity_margin_positive_fraction", 1.0),
    ("dis. exp >0", "disentangled", "expression_margin_positive_fraction", 1.0),
    ("self E_tmp x1e3", "self_reenactment", "e_tmp", 1e3),
)


def variant_config(name: str, seed: int, steps: int | None, cache_dir: str | None):
  """The demo config with `BASE` and `VARIANTS[name]` applied, seeded, its evaluation and saves at the end."""
  from configs import common, synthetic
  config = synthetic.get_config()
  for path, value in {**BASE, **VARIANTS[name]}.items():
    try:
      common.set_field(config, path, value)
    except KeyError as error:
      raise KeyError(f"variant {name!r}: {error.args[0]}") from None
  config.seed = config.data.seed = seed
  if steps:
    config.train.num_steps = steps
  config.train.eval_every = config.train.checkpoint_every = config.train.num_steps
  config.train.eval_at_start = False
  if cache_dir:
    config.data.synthetic.cache_dir = cache_dir
  return config


def summarize(values: list[float]) -> str:
  if any(value is None for value in values):
    return "-"
  mean = float(np.mean(values))
  spread = f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
  return f"{mean:.3f}{spread}"


def table(results: dict) -> str:
  lines = ["| Variant | " + " | ".join(label for label, *_ in COLUMNS) + " |",
           "|---|" + "---:|" * len(COLUMNS)]
  for name, runs in results.items():
    cells = [summarize([None if run["tasks"][task][key] is None else run["tasks"][task][key] * scale
                        for run in runs]) for _, task, key, scale in COLUMNS]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="folder of the runs and the table")
  parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
  parser.add_argument("--seeds", type=int, default=2, help="training seeds per variant (0 .. N-1)")
  parser.add_argument("--table_only", action="store_true",
                      help="train nothing: the table of the runs already finished under --workdir")
  parser.add_argument("--seed_list", default=None,
                      help="comma-separated training seeds (e.g. '1'), instead of --seeds; the table still "
                           "takes every seed already trained and evaluated under --workdir")
  parser.add_argument("--steps", type=int, default=None, help="training steps (default: the demo config's)")
  parser.add_argument("--eval_seed", type=int, default=1000, help="the held-out videos' corpus seed")
  parser.add_argument("--num_videos", type=int, default=8)
  parser.add_argument("--num_frames", type=int, default=8)
  parser.add_argument("--cache_dir", default=None, help="synthetic corpus cache (default: the config's)")
  args = parser.parse_args()
  names = [name.strip() for name in args.variants.split(",") if name.strip()]
  unknown = [name for name in names if name not in VARIANTS]
  if unknown:
    parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
  if args.seeds < 1:
    parser.error("--seeds must be at least 1")
  try:
    seeds = (list(range(args.seeds)) if args.seed_list is None
             else sorted({int(seed) for seed in args.seed_list.split(",") if seed.strip()}))
  except ValueError:
    parser.error(f"--seed_list must be comma-separated integers, got {args.seed_list!r}")
  if not seeds or min(seeds) < 0:
    parser.error(f"--seed_list needs at least one seed >= 0, got {args.seed_list!r}")

  from tfvgan_jax import evaluate, files, inference, train
  root = pathlib.Path(args.workdir).expanduser()
  results, timings = {}, {}
  for name in names:
    results[name] = []
    wanted = set() if args.table_only else set(seeds)
    for seed in sorted(wanted | set(finished_seeds(root, name, args))):
      config = variant_config(name, seed, args.steps, args.cache_dir)
      workdir = root / name / f"seed{seed}"
      checkpoints = workdir / "checkpoints"
      started = time.perf_counter()
      done = checkpoints.is_dir() and config.train.num_steps in inference.checkpoint_steps(checkpoints)
      timing_file = workdir / "ablation_timing.json"
      if not done:
        train.train_and_evaluate(config, workdir)
        files.write_text(timing_file, json.dumps({"train_s": round(time.perf_counter() - started, 1)}) + "\n")
      trained = json.loads(timing_file.read_text())["train_s"] if timing_file.is_file() else None
      document = saved_evaluation(workdir, config.train.num_steps, args) if done else None
      if document is None:
        evaluation = evaluate.evaluate_synthetic(workdir, seed=args.eval_seed, num_videos=args.num_videos,
                                                 num_frames=args.num_frames)
        evaluate.write_results(evaluation, results_folder(workdir, args))
        document = evaluation.document
      results[name].append(document)
      # Training's wall time, kept beside the run (None for runs trained before it was kept).
      timings[f"{name}/seed{seed}"] = {"train_s": trained, "steps": int(config.train.num_steps)}
      print(f"{name} seed {seed}: {'reused' if done else f'trained in {trained:.0f} s'}; "
            f"self SSIM {document['tasks']['self_reenactment']['ssim']:.3f}", flush=True)
      # The table so far, after every run: an interrupted ablation leaves a readable partial table.
      write_table(root, results, timings, args)
  # The table lists every variant evaluated on this held-out set, not only those asked now: a
  # call for one variant no longer writes a table without the others.
  results.update(evaluated_elsewhere(root, set(results), args))
  results = {name: results[name] for name in VARIANTS if name in results}
  print(write_table(root, results, timings, args))
  print(f"wrote {root / f'ablations{held_out_suffix(args)}.md'} and {root / f'ablations{held_out_suffix(args)}.json'}")


def held_out_suffix(args) -> str:
  """'' for the default held-out set (seed 1000, 8 videos x 8 frames), else '_v{videos}_f{frames}_s{seed}':
  the evaluations and tables of another set are kept beside the default's, not over them."""
  if (args.eval_seed, args.num_videos, args.num_frames) == (1000, 8, 8):
    return ""
  return f"_v{args.num_videos}_f{args.num_frames}_s{args.eval_seed}"


def results_folder(workdir: pathlib.Path, args) -> pathlib.Path:
  """Where a run's evaluation on the asked held-out set is kept (ground_truth/ for the default)."""
  return workdir / f"ground_truth{held_out_suffix(args)}"


def saved_evaluation(workdir: pathlib.Path, steps: int, args) -> dict | None:
  """The run's results.json when it evaluated the final checkpoint on the same held-out videos
  (seed, count, frames) as asked now, else None (evaluate again)."""
  path = results_folder(workdir, args) / "results.json"
  try:
    document = json.loads(path.read_text())
    details = document["details"]
  except (OSError, ValueError, KeyError):
    return None
  asked = {"checkpoint_step": steps, "seed": args.eval_seed, "num_videos": args.num_videos,
           "num_frames": args.num_frames}
  return document if all(details.get(key) == value for key, value in asked.items()) else None


def finished_seeds(root: pathlib.Path, name: str, args=None) -> list[int]:
  """The seeds of `name` already trained under `root` (a seedN folder with an evaluation on the
  default held-out set, or on that of `args`): the table covers them even when this call trains
  others."""
  seeds = []
  for seed, folder in seed_folders(root, name):
    evaluated = [folder / "ground_truth"] + ([results_folder(folder, args)] if args is not None else [])
    if any((where / "results.json").is_file() for where in evaluated):
      seeds.append(seed)
  return seeds


def seed_folders(root: pathlib.Path, name: str) -> list[tuple[int, pathlib.Path]]:
  """(seed, folder) of each seedN folder of variant `name` under `root`, by seed."""
  folders = [(int(folder.name[4:]), folder) for folder in (root / name).glob("seed*") if folder.name[4:].isdigit()]
  return sorted(folders)


def evaluated_elsewhere(root: pathlib.Path, asked: set, args) -> dict:
  """{variant: [results.json documents]} of the variants not in `asked` whose finished runs under
  `root` were evaluated on the held-out set of `args` (`saved_evaluation`)."""
  found = {}
  for name in VARIANTS:
    if name in asked:
      continue
    for seed, folder in seed_folders(root, name):
      steps = variant_config(name, seed, args.steps, args.cache_dir).train.num_steps
      document = saved_evaluation(folder, steps, args)
      if document is not None:
        found.setdefault(name, []).append(document)
  return found


def write_table(root: pathlib.Path, results: dict, timings: dict, args) -> str:
  from tfvgan_jax import files
  results = {name: runs for name, runs in results.items() if runs}
  seeds = sorted({len(runs) for runs in results.values()})
  markdown = table(results)
  markdown += (f"\nMean ± sample standard deviation over {'/'.join(map(str, seeds))} seed(s) per variant; "
               f"{args.num_videos} held-out videos (seed {args.eval_seed}) x {args.num_frames} frames per task.\n")
  os.makedirs(root, exist_ok=True)
  files.write_text(root / f"ablations{held_out_suffix(args)}.md", markdown)
  files.write_text(root / f"ablations{held_out_suffix(args)}.json",
                   json.dumps({"variants": {name: VARIANTS[name] for name in results}, "runs": results,
                               "timings": timings}, indent=2) + "\n")
  return markdown


if __name__ == "__main__":
  main()
