"""Reenactment's paste, measured against ground truth: self-reenactment of whole frames.

    python benchmarks/reenact_paste_bench.py --checkpoint=RUN [--frames=24]

Self-reenactment has a ground truth: the source is a clip's first frame, the driving video is the
clip itself, so the output should be the driving frames. For each clip (synthetic talking heads of
the checkpoint's face model, and the shared real clips where present), the whole-frame mean
absolute error (0-255) and PSNR of the output against the driving frames, for the face-mask paste
and the whole-crop paste; and the same with a perfect generator (the output crop is the driving
frame's own 256 px crop, the face region the hull of its Face Mesh points): what each paste can reach at
best, whatever the checkpoint.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import numpy as np
from PIL import Image

TESTDATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "testdata"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--frames", type=int, default=24)
  parser.add_argument("--synthetic", type=int, default=3, help="synthetic clips (of 3)")
  parser.add_argument("--perfect_only", action="store_true", help="only the perfect-generator figures")
  args = parser.parse_args()
  from tfvgan_jax import edit, face3d
  from tfvgan_jax.data import synthetic
  from tfvgan_jax.prep import video
  with tempfile.TemporaryDirectory(prefix="reenact_paste_bench_") as folder:
    folder = pathlib.Path(folder)
    editor = edit.Editor(args.checkpoint, cache_dir=folder / "cache", settings=edit.EditSettings(progress=False))
    clips = {}
    model = editor.checkpoint.face_model
    for seed in (11, 12, 13)[:args.synthetic]:
      truth = synthetic.sample_video(model, seed, args.frames, 128)
      clips[f"synthetic{seed}"] = synthetic.render_frames(model, truth.appearance, truth.id_coeffs, truth.exp_coeffs,
                                                          truth.cameras, 128)
    for name in ("d10", "d18", "d19"):
      path = TESTDATA / "videos" / f"{name}.mp4"
      if path.exists():
        clips[name] = [f.image for f, _ in zip(video.read_frames(path), range(args.frames))]
    del face3d
    totals = {"face": [], "crop": []}
    for name, frames in clips.items():
      driving = folder / f"{name}.mp4"
      video.write_video(driving, list(frames), fps=25)
      source = folder / f"{name}.png"
      Image.fromarray(np.asarray(frames[0])).save(source)
      if args.perfect_only:
        continue
      truth = [f.image.astype(np.float64) for f in video.read_frames(driving)]
      line = [name]
      for paste in ("face", "crop"):
        editor.reenact(source, driving, folder / f"{name}_{paste}.mp4", paste=paste)
        out = [f.image.astype(np.float64) for f in video.read_frames(folder / f"{name}_{paste}.mp4")]
        errors = [np.abs(a - b).mean() for a, b in zip(out, truth)]
        mse = np.mean([((a - b) ** 2).mean() for a, b in zip(out, truth)])
        totals[paste].append(np.mean(errors))
        line.append(f"{paste}: L1 {np.mean(errors):.2f}, PSNR {10 * np.log10(255 ** 2 / mse):.2f} dB")
      print(" | ".join(line), flush=True)
    if not args.perfect_only:
      print(f"mean whole-frame L1: face paste {np.mean(totals['face']):.2f}, crop paste {np.mean(totals['crop']):.2f}")
    perfect_generator(editor, clips, folder)


def perfect_generator(editor, clips: dict, folder: pathlib.Path) -> None:
  """Whole-frame L1 of self-reenactment when the generator's crop is exactly the driving crop."""
  from PIL import ImageDraw

  from tfvgan_jax.prep import composite, crop, occluders, video
  size = 256  # the papers' crop size, not the checkpoint's: resampling a small crop is no paste's fault
  feather = editor.settings.feather * size
  whole = composite.feathered_mask(np.ones((size, size), np.float32), feather)
  totals = {"face": [], "crop": []}
  for name in clips:
    driving = editor.prepare(folder / f"{name}.mp4", "driving")
    frames = {f.index: f.image for f in video.read_frames(folder / f"{name}.mp4")}
    canvas = frames[0]
    mapping = crop.crop_to_source(driving.fitted.box, size)
    errors = {"face": [], "crop": []}
    for k, index in enumerate(driving.fitted.frames):
      truth = frames[int(index)]
      output = crop.crop_image(truth, driving.fitted.box, size)
      points = crop.to_crop(driving.track.points[k], driving.fitted.box, size)[:, :2]
      hull = Image.new("L", (size, size), 0)
      ImageDraw.Draw(hull).polygon([tuple(p) for p in occluders.convex_hull(points)], fill=1)
      face = composite.feathered_mask(np.asarray(hull, np.float32), feather)
      for paste, mask in (("face", face), ("crop", whole)):
        pasted = composite.paste_back(canvas, output, mapping, mask)
        errors[paste].append(np.abs(pasted.astype(np.float64) - truth).mean())
    for paste in errors:
      totals[paste].append(np.mean(errors[paste]))
    print(f"perfect generator, {name}: face paste L1 {np.mean(errors['face']):.2f}, "
          f"crop paste L1 {np.mean(errors['crop']):.2f}", flush=True)
  print(f"perfect generator, mean whole-frame L1: face paste {np.mean(totals['face']):.2f}, "
        f"crop paste {np.mean(totals['crop']):.2f}")


if __name__ == "__main__":
  main()
