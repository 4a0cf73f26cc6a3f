"""Converts a third-party morphable model to the native `.npz` format (`tfvgan_jax.face3d.io`).

  python -m data_prep.convert_face_model --format=3ddfa_v2 \\
      --bfm=3DDFA_V2/configs/bfm_noneck_v3.pkl \\
      --params=3DDFA_V2/configs/param_mean_std_62d_120x120.pkl \\
      --tri=3DDFA_V2/configs/tri.pkl \\
      --out=bfm_3ddfa_v2.npz
  python -m data_prep.convert_face_model --format=deep3d_bfm \\
      --mat=Deep3DFaceRecon_pytorch/BFM/BFM_model_front.mat --out=bfm09_deep3d.npz
  python -m data_prep.convert_face_model --format=sfm \\
      --sfm_model=eos/share/sfm_shape_3448.bin \\
      --sfm_blendshapes=eos/share/expression_blendshapes_3448.bin \\
      --sfm_landmarks=eos/share/ibug_to_sfm.txt --out=sfm_3448.npz

The sfm format needs eos-py (`pip install eos-py`) to read eos's binary files.

Prints what it read, writes the model, reads the file back to verify it, and prints the model's
sizes and licence. The converted model stays under its source's licence: the Basel Face Model (with
the FaceWarehouse-derived expressions of deep3d_bfm) and the Surrey Face Model are for non-commercial
research only. The output is checked before anything is read (its folder must exist, and it may not
be one of the inputs) and written atomically. Exits with status 1, and a one-line message naming
the file, on a missing or malformed input or an output that cannot be written; --debug shows the
traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from data_prep import cli
from tfvgan_jax import face3d, files
from tfvgan_jax.face3d import converters


def _convert_3ddfa_v2(args) -> face3d.MorphableModel:
  print(converters.describe_3ddfa_bfm(args.bfm, args.params, args.tri))
  return converters.convert_3ddfa_bfm(args.bfm, args.params, args.tri)


def _convert_deep3d_bfm(args) -> face3d.MorphableModel:
  print(converters.describe_deep3d_bfm(args.mat))
  return converters.convert_deep3d_bfm(args.mat, recenter=not args.no_recenter)


def _convert_sfm(args) -> face3d.MorphableModel:
  print(converters.describe_sfm(args.sfm_model, args.sfm_blendshapes, args.sfm_landmarks))
  print(f"expression axes: each blendshape times {args.blendshape_std} (the std assumed for its weight)")
  return converters.convert_sfm(args.sfm_model, args.sfm_blendshapes, args.sfm_landmarks, args.blendshape_std)


# Every flag naming an input file.
INPUT_FLAGS = ("bfm", "params", "tri", "mat", "sfm_model", "sfm_blendshapes", "sfm_landmarks")
# Format name -> (its required flags, the conversion printing what it reads).
FORMATS = {
    "3ddfa_v2": (("bfm", "params"), _convert_3ddfa_v2),
    "deep3d_bfm": (("mat",), _convert_deep3d_bfm),
    "sfm": (("sfm_model", "sfm_blendshapes", "sfm_landmarks"), _convert_sfm),
}


def parse_args(argv=None) -> argparse.Namespace:
  parser = cli.ArgumentParser(
      prog="python -m data_prep.convert_face_model",
      description="Convert a morphable face model to tfvgan_jax's native .npz format.")
  parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="the source's format")
  parser.add_argument("--bfm", help="3ddfa_v2: the BFM pickle, 3DDFA_V2's configs/bfm_noneck_v3.pkl")
  parser.add_argument("--params", help="3ddfa_v2: the parameter mean/std, configs/param_mean_std_62d_120x120.pkl")
  parser.add_argument(
      "--tri",
      help="3ddfa_v2: the triangles, configs/tri.pkl; 3DDFA_V2 uses them in place of bfm_noneck_v3.pkl's "
      "own 'tri', so give them with that file")
  parser.add_argument("--mat", help="deep3d_bfm: Deep3DFaceRecon's BFM/BFM_model_front.mat")
  parser.add_argument(
      "--no_recenter", action="store_true",
      help="deep3d_bfm: keep the file's origin instead of moving the mean's centroid to it (Deep3DFaceRecon "
      "recenters by default)")
  parser.add_argument("--sfm_model", help="sfm: eos's share/sfm_shape_3448.bin")
  parser.add_argument("--sfm_blendshapes", help="sfm: eos's share/expression_blendshapes_3448.bin")
  parser.add_argument("--sfm_landmarks", help="sfm: eos's share/ibug_to_sfm.txt (iBUG-68 -> vertex id)")
  parser.add_argument(
      "--blendshape_std", type=float, default=converters.SFM_BLENDSHAPE_STD,
      help="sfm: the std assumed for each blendshape weight; an expression coefficient of 1 is this much of "
      "the full expression (default %(default)s)")
  parser.add_argument("--out", required=True, help="the .npz file to write")
  args = parser.parse_args(argv)
  required, _ = FORMATS[args.format]
  missing = [f"--{flag}" for flag in required if getattr(args, flag) is None]
  if missing:
    parser.error(f"--format={args.format} needs {' and '.join(missing)}")
  if not args.blendshape_std > 0:
    parser.error(f"--blendshape_std must be positive, got {args.blendshape_std}")
  return args


def _print_warning(message, category, filename, lineno, file=None, line=None):
  print(f"warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
  args = parse_args(argv)
  return cli.run(lambda: _convert(args), args.debug)


def _convert(args: argparse.Namespace) -> int:
  _, convert = FORMATS[args.format]
  files.check_output_file(args.out, [getattr(args, flag) for flag in INPUT_FLAGS], "--out")
  with warnings.catch_warnings():
    # One readable line per warning, not the source location a library warning carries.
    warnings.showwarning = _print_warning
    model = convert(args)
    try:
      face3d.save(model, args.out)
    except OSError as e:  # the readers wrap their own OS errors, so this is the write
      raise OSError(f"cannot write {args.out}: {e.strerror or e}") from e
    written = face3d.load(args.out)
  digest = face3d.content_hash(written)
  if digest != face3d.content_hash(model):
    raise face3d.ModelFileError(args.out, None, "reading the written file back gave different arrays")
  print(f"wrote {args.out}: model {written.name!r}, N={written.num_vertices} vertices, "
        f"F={written.num_triangles} triangles, K_id={written.num_id}, K_exp={written.num_exp}, "
        f"{written.landmarks.shape[0]} landmarks")
  print(f"verified by reading it back (content sha256 {digest})")
  print(f"licence: {written.licence}")
  return 0

if __name__ == "__main__":
  sys.exit(main())
