"""How far the ground-truth evaluation's margins go for outputs that know more than G does.

    python benchmarks/margin_references.py                       # the demo's size, 32 held-out videos
    python benchmarks/margin_references.py --size=128 --num_videos=8

`evaluate --synthetic` scores G's output Y against the truth of each task and counts the samples
nearer the truth than the frame with the target's identity (identity margin) and than the truth
with the target's expression (expression margin). These margins are small differences of large
errors, so whether a sample comes out positive also depends on errors that have nothing to do
with identity or expression. This script scores, with the same functions
(`evaluate.truth_metrics`), references that are right in some respects by construction:

  truth pasted          the truth inside the recombined face mask M^, the hint M (the kept frame)
                        outside: what a perfect face costs at the paste's border
  identity video's light  the truth rendered with the light of the identity video A (the light
                        X_i's texture was lit by) instead of the target's: right identity, skin,
                        expression, pose and background, wrong shading
  ... pasted            that face pasted like the first
  scene R + M           what G takes: the recombined face textured from X_i (A's shading baked
                        in at A's pose, nothing where A's frame hides the face), pasted
  scene, R re-shaded    the same with R re-shaded to the target's light (`config.render.relight`)

and prints, per task, the shares of positive margins and the face PSNR. No network is involved:
the references depend only on the held-out corpus (face model, size, seed), so the figures bound
what these measures can say about any checkpoint of that size.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from tfvgan_jax import evaluate, face3d, inference
from tfvgan_jax.data import ground_truth, synthetic


def scene_at_t(model: face3d.MorphableModel, batch: dict, tolerance: float, chunk: int, relight: bool = False) -> dict:
  """R, M^ and M at t ([N, S, S, C] in [-1, 1], M^ [N, S, S, 1]) of a task's samples, as the
  evaluation builds them (X_e's expression on inter samples; R re-shaded with `relight`)."""
  build = jax.jit(lambda frames, face_model: inference.build_scene(face_model, frames, tolerance, "expression",
                                                                   relight=relight))
  size = len(batch["branch"])
  parts = []
  for frames in evaluate.padded_chunks(inference.step_batch(batch), size, chunk):
    scene = build(frames, model)
    parts.append(jax.device_get({"render": inference.at_t(scene.render), "face_mask": inference.at_t(scene.face_mask),
                                 "hint": inference.at_t(scene.hint)}))
  return {name: np.concatenate([part[name] for part in parts])[:size] for name in parts[0]}


def pasted(face: np.ndarray, scene: dict) -> np.ndarray:
  """[N, S, S, 3] in [0, 1]: `face` ([0, 1]) inside M^, the hint M outside (as R + M pastes R)."""
  mask = scene["face_mask"]
  return np.clip((2 * face - 1) * mask + scene["hint"], -1, 1) * 0.5 + 0.5


def under_identity_light(model: face3d.MorphableModel, videos: list, task: ground_truth.Task, num_frames: int,
                         size: int) -> np.ndarray:
  """[N, S, S, 3] in [0, 1]: each sample's truth (`ground_truth.render_recombined`) with the light
  and ambient term of the identity video A instead of those of the video it is pasted into."""
  count, times, frames = len(videos), np.arange(1, num_frames + 1), []
  for v in range(count):
    a, e, p = (videos[(v + offset) % count].truth for offset in (task.identity_offset, task.expression_offset, 0))
    scene = videos[(v + ground_truth.scene_offset(task)) % count].truth
    look = scene.appearance._replace(tint=a.appearance.tint, light=a.appearance.light, ambient=a.appearance.ambient)
    images, _ = synthetic.render_frames_with_coverage(model, look, a.id_coeffs, e.exp_coeffs[times],
                                                      p.cameras[times], size)
    frames.append(images)
  return np.concatenate(frames).astype(np.float32) / 255.0


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--face_model", default="procedural:medium", help="the demo's morphable model")
  parser.add_argument("--size", type=int, default=64, help="crop size (the demo's 64)")
  parser.add_argument("--seed", type=int, default=evaluate.DEFAULT_SYNTHETIC_SEED, help="held-out corpus seed")
  parser.add_argument("--num_videos", type=int, default=32)
  parser.add_argument("--num_frames", type=int, default=8)
  parser.add_argument("--tolerance", type=float, default=0.5, help="config.render.tolerance")
  parser.add_argument("--chunk", type=int, default=16, help="samples per scene call")
  args = parser.parse_args()
  if args.num_videos < ground_truth.MIN_VIDEOS or args.num_frames < 1:
    parser.error(f"need --num_videos >= {ground_truth.MIN_VIDEOS} and --num_frames >= 1")
  model = face3d.load_model(args.face_model)
  if model.albedo is None:
    parser.error(f"--face_model={args.face_model} has no albedo: the synthetic corpus needs one")
  videos = ground_truth.held_out_videos(model, args.seed, args.num_videos, args.num_frames, args.size)
  device_model = jax.tree.map(jnp.asarray, model)
  print(f"{args.num_videos} held-out videos (seed {args.seed}) x {args.num_frames} frames, {args.size} px, "
        f"{args.face_model}; share of samples with a positive margin, and face PSNR against the truth")
  print("| task | reference | ID margin > 0 | Exp margin > 0 | PSNR face |")
  print("|---|---|---:|---:|---:|")
  for task in ground_truth.TASKS:
    if task.name == "self_reenactment":
      continue  # no margin: the truth is the only reference
    samples = ground_truth.task_samples(model, videos, task, args.num_frames, args.size)
    scene = scene_at_t(device_model, samples.batch, args.tolerance, args.chunk)
    truth = samples.truth.astype(np.float32) / 255.0
    lit = under_identity_light(model, videos, task, args.num_frames, args.size)
    reshaded = scene_at_t(device_model, samples.batch, args.tolerance, args.chunk, relight=True)
    references = {"truth pasted": pasted(truth, scene), "identity video's light": lit,
                  "... pasted": pasted(lit, scene),
                  "scene R + M": np.clip((scene["render"] + scene["hint"]) * 0.5 + 0.5, 0, 1),
                  "scene, R re-shaded": np.clip((reshaded["render"] + reshaded["hint"]) * 0.5 + 0.5, 0, 1)}
    for name, image in references.items():
      row = evaluate.truth_metrics(image, samples)
      shares = ["-" if row[key] is None else f"{np.mean(row[key] > 0):.3f}"
                for key in ("identity_margin", "expression_margin")]
      print(f"| {task.name} | {name} | {shares[0]} | {shares[1]} | {np.mean(row['psnr_face']):.2f} |", flush=True)


if __name__ == "__main__":
  main()
