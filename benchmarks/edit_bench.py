"""Editing speed end to end, and the temporal stability it buys over a frame-by-frame edit.

    python benchmarks/edit_bench.py --checkpoint=/tmp/tfvgan_demo           # the demo checkpoint
    python benchmarks/edit_bench.py --checkpoint=RUN --target=clip.mp4 --source=face.jpg --cpus=2

For a face swap of --source onto --target (default: the shared test clips, else synthetic mp4s):

  cold      the whole edit with an empty preparation cache (tracking, fitting, rendering, networks,
            paste-back, encoding), including compilation
  cached    the same edit again: preparation read from the cache, programs compiled
  baseline  the frame-by-frame edit (EditSettings.per_frame: every frame fitted alone, no landmark
            smoothing), same checkpoint

and the temporal warping error E_tmp (Farneback flow, `metrics.temporal_error_optical_flow`) of the
face region of both outputs (the target's crop at the checkpoint's size), lower is steadier: once
with the flow of the output itself, once with the flow of the target video (Lai et al.'s protocol:
output changes that the input's motion does not explain count as flicker).

Identity by fitting, without a recognition network: the source, the target and both outputs are
each tracked and fitted by editing's own preparation (Face Mesh, the per-clip fitter: one identity
per clip), and each output's identity coefficients are compared with the source's and the target's
(`metrics.fitted_identity_per_sample`): the margin ||id(out) - id(target)|| - ||id(out) - id(source)||
(positive: nearer the source) and both cosines. It sees face shape as 68 landmarks reveal it, not
skin, texture or hair, and the fitter's prior compresses it: a swap that carries the source's skin
onto the target's face shape scores as the target.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

import numpy as np

TESTDATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "testdata"


def default_inputs(folder: str) -> tuple[str, str]:
  if (TESTDATA / "videos" / "d12.mp4").exists():
    return str(TESTDATA / "images" / "d8.jpg"), str(TESTDATA / "videos" / "d12.mp4")
  from PIL import Image

  from tfvgan_jax import face3d
  from tfvgan_jax.data import synthetic
  from tfvgan_jax.prep import video
  model = face3d.load_model("procedural:medium")
  clips = []
  for seed, frames in ((0, 1), (1, 250)):
    truth = synthetic.sample_video(model, seed, frames, 512)
    clips.append(synthetic.render_frames(model, truth.appearance, truth.id_coeffs, truth.exp_coeffs, truth.cameras, 512))
  source, target = os.path.join(folder, "source.png"), os.path.join(folder, "target.mp4")
  Image.fromarray(clips[0][0]).save(source)
  video.write_video(target, clips[1], fps=25)
  return source, target


def face_crops(path: str, box, size: int) -> np.ndarray:
  from tfvgan_jax.prep import crop, video
  return np.stack([crop.crop_image(f.image, box, size) for f in video.read_frames(path)])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True, help="a training workdir")
  parser.add_argument("--source", help="identity picture or video")
  parser.add_argument("--target", help="target video")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--cpus", type=int, default=0, help="cores to pin the process to (0: no pinning)")
  args = parser.parse_args()
  if args.cpus:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.cpus]))
  from tfvgan_jax import edit
  from tfvgan_jax.prep import video

  work = tempfile.mkdtemp(prefix="edit_bench_")
  source, target = (args.source, args.target) if args.source and args.target else default_inputs(work)
  info = video.probe(target)
  checkpoint = edit.load_checkpoint(args.checkpoint)
  print(f"checkpoint step {checkpoint.step}, {checkpoint.image_size} px, {checkpoint.face_model.name}; "
        f"target {info.width}x{info.height}, {info.num_frames} frames at {info.fps:g} fps "
        f"({info.num_frames / max(info.fps, 1):.1f} s); {len(os.sched_getaffinity(0))} core(s)")

  results = {}
  for name, per_frame, cache in (("cold", False, "cache"), ("cached", False, "cache"), ("baseline", True, "base")):
    settings = edit.EditSettings(batch_size=args.batch_size, per_frame=per_frame)
    start = time.perf_counter()
    editor = edit.Editor(checkpoint, cache_dir=os.path.join(work, cache), settings=settings)
    report = editor.swap(source, target, os.path.join(work, f"{name}.mp4"))
    results[name] = (time.perf_counter() - start, report)
  measuring = edit.Editor(checkpoint, cache_dir=os.path.join(work, "cache"))
  box = measuring.prepare(target, "target").fitted.box
  for name, (seconds, report) in results.items():
    print(f"{name:9s} {seconds:7.1f} s  {report.frames / seconds:6.1f} frames/s  "
          f"({report.edited} edited, {report.passed_through} passed through)")
  from tfvgan_jax import metrics
  size = checkpoint.image_size
  crops = {name: face_crops(os.path.join(work, f"{name}.mp4"), box, size) for name in ("cached", "baseline")}
  target_crops = face_crops(target, box, size)
  for label, flow_frames in (("the output's own flow", None), ("the target's flow", target_crops)):
    ours, baseline = (metrics.temporal_error_optical_flow(crops[name], flow_frames=flow_frames)
                      for name in ("cached", "baseline"))
    print(f"E_tmp of the face region, Farneback, {label}: per-clip fit + smoothing {ours:.6f}, "
          f"frame by frame {baseline:.6f} (baseline / ours {baseline / ours:.2f})")
  identities = {role: measuring.prepare(path, role).fitted.fit.id_coeffs[None]
                for role, path in (("source", source), ("target", target), ("cached", os.path.join(work, "cached.mp4")),
                                   ("baseline", os.path.join(work, "baseline.mp4")))}
  for name in ("cached", "baseline"):
    measures = metrics.fitted_identity_per_sample(identities[name], identities["source"], identities["target"])
    print(f"identity by fitting, {name}: margin {measures['margin'][0]:+.3f} (positive: nearer the source), "
          f"cosine with source {measures['cosine_source'][0]:.3f}, with target {measures['cosine_target'][0]:.3f}")


if __name__ == "__main__":
  main()
