"""Learns a morphable face model on MediaPipe's 468-point Face Mesh topology from your own videos.

    python -m data_prep.learn_face_model --input='DIR/**/*.mp4' --out=model.npz [--num_id=40] [--num_exp=10]

Each video is tracked as `data_prep.build` tracks it (detector every --detect_every frames, Face
Mesh landmarks between, the main face, temporal smoothing); its 468 3D landmarks per frame are one
person's clip. `tfvgan_jax.prep.learn_model.learn_face_model` aligns them (generalized Procrustes),
takes the mean and identity basis from the clips' neutral shapes and the expression basis from the
within-clip residuals (PCA), triangulates the mean face (Delaunay, with the eyes and the mouth left
open) and lists the 68 iBUG landmarks. The result is a native `.npz` that `data_prep.build
--face_model=` and training take, free of the BFM's and the SFM's non-commercial licences: it is
derived from your videos and the Face Mesh topology (Apache-2.0).

Tracks are cached in --cache (default: a `tracks` folder next to --out; give a `data_prep.build`
output's OUT/tracks to reuse its tracking). More clips of more people give a better identity
basis: the model has at most (number of clips - 1) identity axes.

--out is checked before any video is read (its folder must exist, it may not be one of the inputs)
and written atomically. Errors are one line, `error: ...`, naming the flag or file; --debug shows
the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from data_prep import build, cli
from tfvgan_jax import face3d, files
from tfvgan_jax.prep import clip as clip_lib
from tfvgan_jax.prep import detect, landmarks, learn_model, model_files


def parse_args(argv=None) -> argparse.Namespace:
  parser = cli.ArgumentParser(prog="python -m data_prep.learn_face_model", description=__doc__.split("\n\n")[0])
  build.add_video_flags(parser)
  parser.add_argument("--out", required=True, help="the .npz model to write")
  parser.add_argument("--num_id", type=int, default=40, help="identity axes (at most clips - 1) (%(default)s)")
  parser.add_argument("--num_exp", type=int, default=10, help="expression axes (%(default)s)")
  parser.add_argument("--name", default=learn_model.NAME, help="the model's name (%(default)s)")
  parser.add_argument("--cache", help="folder of cached tracks (default: OUT's folder/tracks)")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  return cli.run(lambda: _learn(args), args.debug)


def _learn(args: argparse.Namespace) -> int:
  start = time.perf_counter()
  settings = build.prep_settings(args)
  paths = build.model_paths(args)
  inputs = build.find_inputs(args.input)
  if not inputs:
    raise ValueError(f"--input={args.input}: no file matches")
  files.check_output_file(args.out, [*inputs, *paths, args.landmarker_task], "--out")
  detector = detect.FaceDetector(paths.detector)
  landmarker = landmarks.FaceMesh(paths.landmarks)
  cache = args.cache or os.path.join(os.path.dirname(os.path.abspath(args.out)), "tracks")
  files.remove_stale_partials(cache)
  hashes = (model_files.sha256_of(paths.detector), model_files.sha256_of(paths.landmarks))
  clips, skipped = [], {}
  for path in inputs:
    try:
      clips.append(clip_lib.cached_track(path, detector, landmarker, settings, cache, hashes).points)
      print(f"  {path}: {len(clips[-1])} frames")
    except clip_lib.SkippedVideo as skip:
      skipped[skip.reason] = skipped.get(skip.reason, 0) + 1
      print(f"  {path}: skipped, {skip.reason}: {skip.problem}")
  try:
    model = learn_model.learn_face_model(clips, num_id=args.num_id, num_exp=args.num_exp, name=args.name)
  except ValueError as error:
    raise ValueError(f"{error} ({len(clips)} usable clips of {len(inputs)} videos)") from error
  face3d.save(model, args.out)
  face3d.load(args.out)
  frames = sum(len(c) for c in clips)
  print(f"learned {model.name} from {len(clips)} clips ({frames} frames; skipped {skipped or 'none'}): "
        f"{model.num_vertices} vertices, {model.num_triangles} triangles, K_id={model.num_id}, "
        f"K_exp={model.num_exp}; wrote {args.out} in {time.perf_counter() - start:.1f} s")
  print(f"licence: {model.licence}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
