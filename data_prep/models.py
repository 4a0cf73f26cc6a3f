"""Fetches the MediaPipe face models that `tfvgan_jax.prep` runs (detector and Face Mesh landmarks).

  python -m data_prep.models fetch [--dir=DIR] [--wheel=mediapipe-0.10.21-....whl]
  python -m data_prep.models path

`fetch` downloads the MediaPipe 0.10.21 wheel with pip (no dependencies, no install; one
platform's wheel, since the models are the same in all of them), takes out only the face detector
and Face Mesh `.tflite` files and the optional full-range face detector, palm detector and hand
landmark model that editing uses, checks their sha256 and writes them to DIR (default: `$TFVGAN_MODELS`, else
`~/.cache/tfvgan_jax/models`). `--wheel` uses a wheel already on disk instead of downloading.
`path` prints where the files are expected and whether they are there.

Licence: the models are Google's MediaPipe face detection and Face Mesh models, distributed under
the Apache License 2.0 (https://github.com/google-ai-edge/mediapipe). Exits with status 1 and a
one-line message on a failed download or a wrong file (--debug shows the traceback).
"""

from __future__ import annotations

import argparse
import glob
import os
import posixpath
import subprocess
import sys
import tempfile

from data_prep import cli
from tfvgan_jax.prep import model_files


def _download_wheel(directory: str) -> str:
  """Runs pip download for MediaPipe's Linux x86-64 CPython 3.11 wheel into `directory`."""
  command = [sys.executable, "-m", "pip", "download", f"mediapipe=={model_files.MEDIAPIPE_VERSION}",
             "--no-deps", "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64",
             "--python-version", "3.11", "--implementation", "cp", "-d", directory]
  print("running:", " ".join(command), flush=True)
  result = subprocess.run(command, check=False)
  wheels = glob.glob(os.path.join(directory, "mediapipe-*.whl"))
  if result.returncode != 0 or len(wheels) != 1:
    raise model_files.ModelFilesError(
        f"pip download of mediapipe=={model_files.MEDIAPIPE_VERSION} failed "
        f"(exit status {result.returncode}, {len(wheels)} wheel(s) in {directory})")
  return wheels[0]


def fetch(out_dir: str, wheel=None) -> model_files.ModelPaths:
  """Extracts the two models from `wheel`, or from a freshly downloaded one, into `out_dir`."""
  if wheel is not None:
    paths = model_files.extract_from_wheel(wheel, out_dir)
  else:
    with tempfile.TemporaryDirectory(prefix="mediapipe-wheel-") as directory:
      paths = model_files.extract_from_wheel(_download_wheel(directory), out_dir)
  extras = [path for path in (os.path.join(out_dir, posixpath.basename(member)) for member in model_files.OPTIONAL_MODELS)
            if os.path.isfile(path)]
  for path in (*paths, *extras):
    print(f"{path}  sha256 {model_files.sha256_of(path)}")
  if os.path.abspath(out_dir) != model_files.models_dir():
    print(f"set TFVGAN_MODELS={os.path.abspath(out_dir)} so that tfvgan_jax finds them")
  return paths


def show_paths() -> bool:
  """Prints where the model files are expected and whether each is present; True if both are."""
  directory = model_files.models_dir()
  print(f"models directory: {directory} (TFVGAN_MODELS overrides it)")
  present = True
  for member in (model_files.DETECTOR_FILE, model_files.LANDMARK_FILE, *model_files.OPTIONAL_MODELS):
    path = os.path.join(directory, posixpath.basename(member))
    found = os.path.isfile(path)
    optional = member in model_files.OPTIONAL_MODELS
    present &= found or optional
    print(f"  {path}: {'present' if found else 'missing'}{' (optional)' if optional else ''}")
  if not present:
    print(f"fetch them with: {model_files.FETCH_COMMAND}")
  return present


def main(argv=None) -> int:
  parser = cli.ArgumentParser(prog="python -m data_prep.models", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  fetch_parser = commands.add_parser("fetch", help="download and extract the face models", debug=False)
  fetch_parser.add_argument("--dir", default=None, help="output directory (default: models_dir())")
  fetch_parser.add_argument("--wheel", default=None, help="use this MediaPipe wheel, no download")
  commands.add_parser("path", help="print where the models are expected and if they are there", debug=False)
  args = parser.parse_args(argv)
  if args.command == "path":
    return 0 if show_paths() else 1

  def fetch_models() -> int:
    fetch(args.dir or model_files.models_dir(), args.wheel)
    return 0

  return cli.run(fetch_models, args.debug)

if __name__ == "__main__":
  sys.exit(main())
