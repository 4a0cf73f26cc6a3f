"""A real result on real clips: fine-tuning from the synthetic demo against training from scratch.

    python benchmarks/clips_result.py --workdir=/tmp/clips_result --demo=/tmp/tfvgan_demo128
    python benchmarks/clips_result.py --workdir=/tmp/clips_result --train_demo       # trains the demo first
    python benchmarks/clips_result.py --workdir=/tmp/cr --steps=20 --size=64 --demo=/tmp/tfvgan_demo  # a smoke run

The protocol (`configs/clips.py`):

  1. records of the clips (default: the six shared test clips) built with `data_prep.build`, fitted
     with the demo's face model at its crop size (--size);
  2. two runs of `configs/clips.py` (its :cpu batch unless --batch_size) for --steps steps each,
     per seed: 'scratch' (fresh networks) and 'finetune' (`config.init_from` the demo), both trained
     on the first 80% of every clip and evaluated every --eval_every steps on the held-out rest;
  3. each final checkpoint measured by `tfvgan_jax.evaluate` on the held-out tails (every clip,
     --num_frames frames): self-reenactment SSIM against the true frames, E_tmp, and for swaps
     (every clip's face with every other clip's identity, `evaluate --swap_pairs=all`) the identity
     measure by fitting (the output's fitted identity coefficients closer to the source's than to
     the target's: the margin's positive share);
  4. the steps the fine-tuned run needed to reach the scratch run's final SSIM (from the SSIM
     curves of the runs' own evaluations);
  5. with --stability, `benchmarks/edit_stability.py` on the fine-tuned run: E_tmp of swaps with
     the per-clip preparation against frame-by-frame editing (on whole clips: that measures the
     preparation, not generalisation).

Writes WORKDIR/clips_result.md and clips_result.json (and keeps every run, so a re-run reuses the
finished ones). Times are wall-clock on this machine, printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTDATA = ROOT.parent / "shared" / "testdata"
ARMS = ("scratch", "finetune")


def eval_curve(workdir: pathlib.Path, tag: str = "eval/ssim") -> dict[int, float]:
  """{step: value} of a run's evaluation scalar, from its TensorBoard event files."""
  from tensorboard.backend.event_processing import event_accumulator
  accumulator = event_accumulator.EventAccumulator(str(workdir / "tensorboard"), size_guidance={"scalars": 0})
  accumulator.Reload()
  if tag not in accumulator.Tags().get("scalars", []):
    return {}
  return {int(event.step): float(event.value) for event in accumulator.Scalars(tag)}


def steps_to_reach(curve: dict[int, float], level: float) -> int | None:
  """The first evaluated step whose value is at least `level` (None: never)."""
  return next((step for step in sorted(curve) if curve[step] >= level), None)


def build_records(clips: list[str], out: pathlib.Path, face_model: str, size: int) -> str:
  from data_prep import build
  dataset = out / "videos"
  if not (out / build.SUMMARY_FILE).is_file():
    folder = out.parent / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    for clip in clips:
      link = folder / pathlib.Path(clip).name
      if not link.exists():
        os.symlink(os.path.abspath(clip), link)
    code = build.main([f"--input={folder}/*.mp4", f"--out={out}", f"--face_model={face_model}", f"--size={size}"])
    if code:
      raise SystemExit(f"data_prep.build failed with exit code {code}")
  summary = json.loads((out / build.SUMMARY_FILE).read_text())
  print(f"records: {summary['written']} clips, {summary['frames']} frames at {size} px in {dataset}", flush=True)
  return str(dataset)


def arm_config(arm: str, args, videos: str, demo: str | None, seed: int):
  from configs import clips
  config = clips.get_config(f"res={args.size},cpu={args.cpu}")
  config.data.videos = videos
  config.seed = config.data.seed = seed
  config.train.num_steps = args.steps
  config.train.eval_every = config.train.checkpoint_every = args.eval_every or max(args.steps // 6, 1)
  config.eval.num_frames = args.num_frames
  if args.batch_size:
    config.data.batch_size = args.batch_size
  if demo:
    from tfvgan_jax import inference
    base, _ = inference.checkpoint_config(demo)
    config.face_model = base["face_model"]
    for key, value in base["model"].items():  # the demo's networks, for both arms: equal compute
      config.model[key] = value
  from configs import common
  for override in args.set or ():
    key, _, value = override.partition("=")
    try:
      old = common.get_field(config, key) if value and "." in key else None
    except KeyError:
      old = None
    if old is None or hasattr(old, "keys"):
      raise SystemExit(f"--set={override}: give FIELD=VALUE with a field of the clips config, e.g. model.gen_output=residual "
                       f"or loss.weights.app=0")
    common.set_field(config, key, value.lower() in ("1", "true", "yes") if isinstance(old, bool) else type(old)(value))
  if arm == "finetune":
    config.init_from = demo
  return config


def train_demo(args, root: pathlib.Path) -> str:
  from configs import synthetic
  from tfvgan_jax import inference, train
  workdir = root / "demo"
  config = synthetic.get_config(f"res={args.size}")
  done = (workdir / "checkpoints").is_dir() and config.train.num_steps in inference.checkpoint_steps(
      workdir / "checkpoints")
  if not done:
    started = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    print(f"demo trained in {time.perf_counter() - started:.0f} s", flush=True)
  return str(workdir)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--clips", default=str(TESTDATA / "videos" / "*.mp4"), help="glob of the clips")
  parser.add_argument("--demo", default=None, help="the synthetic demo run to fine-tune from")
  parser.add_argument("--train_demo", action="store_true", help="train the demo at --size first (into WORKDIR/demo)")
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=1200)
  parser.add_argument("--eval_every", type=int, default=None, help="default steps / 6")
  parser.add_argument("--seeds", type=int, default=1)
  parser.add_argument("--num_frames", type=int, default=8, help="evaluated frames per clip (of its held-out tail)")
  parser.add_argument("--batch_size", type=int, default=None, help="default the config's (:cpu 8, GPU 16)")
  parser.add_argument("--cpu", type=int, default=1, help="1: configs/clips.py:cpu (batch 8), 0: the GPU sizes")
  parser.add_argument("--stability", action="store_true", help="also run benchmarks/edit_stability.py")
  parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                      help="a config field for both arms, after the demo's networks (e.g. model.gen_output=residual; "
                           "the fine-tuned arm then needs a demo of the same shapes); repeatable")
  parser.add_argument("--arms", default=",".join(ARMS),
                      help="which runs to train and measure now (e.g. 'scratch' while the demo still trains; "
                           "a later run with both reuses it)")
  args = parser.parse_args()
  arms = [arm for arm in args.arms.split(",") if arm]
  if not arms or set(arms) - set(ARMS):
    parser.error(f"--arms={args.arms}: name some of {', '.join(ARMS)}")
  import glob
  clips = sorted(glob.glob(args.clips))
  if len(clips) < 3:
    parser.error(f"--clips={args.clips}: {len(clips)} clips; swaps need three or more people")
  root = pathlib.Path(args.workdir).expanduser()
  root.mkdir(parents=True, exist_ok=True)
  demo = train_demo(args, root) if args.train_demo else args.demo
  if not demo:
    parser.error("give --demo=RUN (a configs/synthetic.py run at --size) or --train_demo")

  from tfvgan_jax import evaluate, inference, train
  base, step = inference.checkpoint_config(demo)
  if int(base["model"]["image_size"]) != args.size:
    parser.error(f"--demo={demo} was trained at {base['model']['image_size']} px, --size is {args.size}")
  videos = build_records(clips, root / "records", base["face_model"], args.size)

  runs, timings = {}, {}
  for seed in range(args.seeds):
    for arm in arms:
      name = f"{arm}/seed{seed}"
      workdir = root / arm / f"seed{seed}"
      config = arm_config(arm, args, videos, demo, seed)
      done = (workdir / "checkpoints").is_dir() and args.steps in inference.checkpoint_steps(workdir / "checkpoints")
      started = time.perf_counter()
      timing = workdir / "train_seconds.txt"  # kept for a later run of this script that reuses the run
      if not done:
        train.train_and_evaluate(config, workdir)
        timing.write_text(f"{time.perf_counter() - started:.1f}\n")
      if timing.is_file():
        timings[name] = float(timing.read_text())
      result = evaluate.evaluate_checkpoint(workdir, videos, num_videos=0, num_frames=args.num_frames,
                                            pairs_of_videos="all")
      evaluate.write_results(result, workdir / "held_out")
      swap = result.document["details"]["rows"][evaluate.SWAPPING]
      runs[name] = {
          "ssim": result.rows[evaluate.REENACTMENT]["ssim"],
          "ssim_identity_frame": result.document["details"]["rows"][evaluate.REENACTMENT]["ssim_identity_frame"],
          "ssim_scene": result.document["details"]["rows"][evaluate.REENACTMENT]["ssim_scene"],
          "e_tmp": result.rows[evaluate.REENACTMENT]["e_tmp"],
          "swap_e_tmp": result.rows[evaluate.SWAPPING]["e_tmp"],
          "swap_identity_margin_positive_fraction": swap.get("fitted_identity_margin_positive_fraction"),
          "swap_identity_margin": swap.get("fitted_identity_margin"),
          "swap_identity_videos": swap.get("fitted_identity_videos"),
          "swap_inner_identity_margin_positive_fraction": swap.get("fitted_inner_identity_margin_positive_fraction"),
          "swap_shape_transfer": swap.get("landmark_identity_transfer"),
          "swap_shape_transfer_scene": swap.get("scene_landmark_identity_transfer"),
          "curve": eval_curve(workdir),
          "train_s": timings.get(name),
      }
      print(f"{name}: held-out SSIM {runs[name]['ssim']:.3f}, swaps closer to the source "
            f"{runs[name]['swap_identity_margin_positive_fraction']}", flush=True)

  reach = {}
  for seed in range(args.seeds if set(arms) == set(ARMS) else 0):
    scratch, tuned = runs[f"scratch/seed{seed}"], runs[f"finetune/seed{seed}"]
    final = scratch["curve"].get(args.steps, scratch["ssim"])
    reach[f"seed{seed}"] = {"scratch_final_ssim": final, "finetune_steps_to_reach": steps_to_reach(tuned["curve"], final)}

  def cell(arm: str, key: str, scale: float = 1.0) -> str:
    values = [runs[f"{arm}/seed{s}"][key] for s in range(args.seeds)]
    if any(v is None for v in values):
      return "-"
    values = np.asarray(values, float) * scale
    return f"{values.mean():.3f}" + (f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else "")

  lines = ["| arm | held-out SSIM | E_tmp x1e3 | swap: closer to source (share) | swap margin | "
           "inner face: closer to source | shape transfer (scene) | train s |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for arm in arms:
    lines.append(f"| {arm} | {cell(arm, 'ssim')} | {cell(arm, 'e_tmp', 1e3)} | "
                 f"{cell(arm, 'swap_identity_margin_positive_fraction')} | {cell(arm, 'swap_identity_margin')} | "
                 f"{cell(arm, 'swap_inner_identity_margin_positive_fraction')} | "
                 f"{cell(arm, 'swap_shape_transfer')} ({cell(arm, 'swap_shape_transfer_scene')}) | {cell(arm, 'train_s')} |")
  markdown = "\n".join(lines) + "\n\n" + "\n".join(
      f"{seed}: the fine-tuned run reached the scratch run's final SSIM {r['scratch_final_ssim']:.3f} at step "
      f"{r['finetune_steps_to_reach']}" for seed, r in reach.items()) + (
      f"\n\n{len(clips)} clips, {args.size} px, {args.steps} steps, {args.seeds} seed(s); demo {demo} (step {step}). "
      "Evaluated on the last 20% of every clip (never trained on). Without a model, the identity frame itself "
      f"scores SSIM {next(iter(runs.values()))['ssim_identity_frame']:.3f} there, and the scene R + M that G takes "
      f"{next(iter(runs.values()))['ssim_scene']:.3f}. Shape transfer: the share of the shape change from the "
      "target to the source that a swap's inner-face landmarks carry, in the target's own poses (0: the target "
      "unchanged), for the output and, in brackets, for the scene R + M without G." +
      (f" Config set: {', '.join(args.set)}." if args.set else "") + "\n")

  if args.stability and "finetune" in arms:
    tuned = root / "finetune" / "seed0"
    stability = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "edit_stability.py"),
                                f"--checkpoint={tuned}"], capture_output=True, text=True, cwd=ROOT)
    markdown += "\nedit_stability.py on the fine-tuned run:\n\n```\n" + stability.stdout[-4000:] + "```\n"

  from tfvgan_jax import files
  files.write_text(root / "clips_result.md", markdown)
  files.write_text(root / "clips_result.json", json.dumps(
      {"args": vars(args), "demo_step": step, "runs": runs, "reach": reach}, indent=2) + "\n")
  print(markdown)
  print(f"wrote {root / 'clips_result.md'} and {root / 'clips_result.json'}")


if __name__ == "__main__":
  main()
