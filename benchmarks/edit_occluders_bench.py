"""Occluders on a real clip: which frames keep the input's pixels, and what it does to E_tmp.

    python benchmarks/edit_occluders_bench.py --checkpoint=RUN [--target=d12.mp4] [--source=d8.jpg] [--frames_dir=DIR]

Swaps --source onto --target with and without the hand occluder and prints the frames where a
hand was kept in front, the hand region's overlap with the pasted face, and the temporal warping
error E_tmp (x 1e-6, Farneback flow of the output / of the target, face region, as
benchmarks/edit_stability.py) of both outputs. --frames_dir saves, for a few frames with hands,
the target, both outputs and the hand region side by side (PNG).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile

import numpy as np

TESTDATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "testdata"


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--target", default=str(TESTDATA / "videos" / "d12.mp4"))
  parser.add_argument("--source", default=str(TESTDATA / "images" / "d8.jpg"))
  parser.add_argument("--frames_dir", default=None)
  args = parser.parse_args()
  from PIL import Image

  from tfvgan_jax import edit, metrics
  from tfvgan_jax.prep import crop, occluders, video
  work = tempfile.mkdtemp(prefix="edit_occluders_")
  cache = os.path.join(work, "cache")
  outputs = {}
  for name, names in (("without", ()), ("with hands", ("hands",))):
    editor = edit.Editor(args.checkpoint, cache_dir=cache, settings=edit.EditSettings(progress=False, occluders=names))
    outputs[name] = os.path.join(work, f"{len(names)}.mp4")
    report = editor.swap(args.source, args.target, outputs[name])
    print(f"{name}: {report.edited} frames edited, {report.occluded} with a hand kept in front, {report.seconds:.1f} s")
  box = editor.prepare(args.target, "target").fitted.box
  size = editor.checkpoint.image_size
  crops = lambda path: np.stack([crop.crop_image(f.image, box, size) for f in video.read_frames(path)])  # noqa: E731
  target = crops(args.target)
  for name, path in outputs.items():
    own = crops(path)
    print(f"E_tmp {name}: {metrics.temporal_error_optical_flow(own) * 1e6:.1f} / "
          f"{metrics.temporal_error_optical_flow(own, flow_frames=target) * 1e6:.1f}")
  (hands,), _ = occluders.make_occluders(["hands"])
  track = editor.faces(args.target, "target")[0]
  face_boxes = {int(f): p for f, p in zip(track.frames, track.points)}
  found, overlapping = [], []
  frames = {}
  for frame in video.read_frames(args.target):
    region = hands(frame.image)
    if region.any():
      found.append(frame.index)
      points = face_boxes.get(frame.index)
      if points is not None:
        x0, y0 = np.floor(points[:, :2].min(axis=0)).astype(int)
        x1, y1 = np.ceil(points[:, :2].max(axis=0)).astype(int)
        share = float(region[max(y0, 0):y1, max(x0, 0):x1].mean())
        if share > 0:
          overlapping.append((frame.index, round(share, 3)))
      frames[frame.index] = (frame.image, region)
  print(f"hands found in {len(found)} frames: {found}")
  print(f"of them covering part of the face's box (frame, share of the box): {overlapping}")
  if args.frames_dir and found:
    os.makedirs(args.frames_dir, exist_ok=True)
    edited = {name: {f.index: f.image for f in video.read_frames(path) if f.index in frames} for name, path in outputs.items()}
    for index in found[:: max(1, len(found) // 4)][:4]:
      image, region = frames[index]
      overlay = (np.stack([region * 255] * 3, -1)).astype(np.uint8)
      row = np.concatenate([image, edited["without"][index], edited["with hands"][index], overlay], axis=1)
      Image.fromarray(row).save(os.path.join(args.frames_dir, f"occluders_{index:04d}.png"))


if __name__ == "__main__":
  main()
