"""How reliably `--face_reference` picks the right person: the shared clips tiled in pairs.

    python benchmarks/face_reference_bench.py --checkpoint=RUN [--frames=40] [--detector=short]

Each trial puts the first --frames frames of two shared clips side by side (one video, two people),
takes a frame of one of them from outside that span as the reference picture, and asks the editor
which face track matches it (`Editor.match_reference`). Prints each trial's distances and the hit
rate.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import numpy as np
from PIL import Image

TESTDATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "testdata"
PAIRS = [("d10", "d11"), ("d12", "d18"), ("d19", "d20"), ("d10", "d12"), ("d11", "d18"),
         ("d18", "d19"), ("d20", "d10"), ("d11", "d19"), ("d12", "d20"), ("d18", "d10")]


def clip_frames(name: str, count: int, size: int = 480) -> tuple[list[np.ndarray], np.ndarray]:
  """The first `count` frames of a shared clip at size x size, and a later frame as the reference."""
  from tfvgan_jax.prep import video
  frames = [np.asarray(Image.fromarray(f.image).resize((size, size), Image.BILINEAR))
            for f in video.read_frames(TESTDATA / "videos" / f"{name}.mp4")]
  return frames[:count], frames[-1]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--frames", type=int, default=40)
  parser.add_argument("--detector", default="short")
  args = parser.parse_args()
  from tfvgan_jax import edit
  from tfvgan_jax.prep import video
  editor_kwargs = {"detector_range": args.detector} if args.detector != "short" else {}
  with tempfile.TemporaryDirectory(prefix="face_reference_bench_") as folder:
    editor = edit.Editor(args.checkpoint, cache_dir=pathlib.Path(folder) / "cache",
                         settings=edit.EditSettings(progress=False), **editor_kwargs)
    hits = 0
    for trial, (left, right) in enumerate(PAIRS):
      (left_frames, left_ref), (right_frames, right_ref) = clip_frames(left, args.frames), clip_frames(right, args.frames)
      tiled = pathlib.Path(folder) / f"{left}_{right}.mp4"
      video.write_video(tiled, [np.concatenate(pair, axis=1) for pair in zip(left_frames, right_frames)], fps=25)
      wanted, picture = (left, left_ref) if trial % 2 == 0 else (right, right_ref)
      reference = pathlib.Path(folder) / f"{wanted}_reference.png"
      Image.fromarray(picture).save(reference)
      tracks = editor.faces(tiled, "target")
      centres = [float(np.mean(t.points[..., 0])) for t in tracks]
      truth = [("left" if c < left_frames[0].shape[1] else "right") for c in centres]
      try:
        best, distances = editor.match_reference(reference, tracks, "target")
        picked = truth[best]
        hit = picked == ("left" if wanted == left else "right")
        detail = f"picked face {best + 1} ({picked}), distances " + ", ".join(
            f"{truth[n]} {d:.3f}" for n, d in enumerate(distances))
      except edit.EditError as error:
        hit, detail = False, f"error: {error}"
      hits += hit
      print(f"trial {trial + 1}: {left}|{right}, reference {wanted}: {len(tracks)} tracks; {detail} -> "
            f"{'hit' if hit else 'MISS'}", flush=True)
    print(f"hit rate {hits}/{len(PAIRS)}")


if __name__ == "__main__":
  main()
