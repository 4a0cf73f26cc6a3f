"""Builds the synthetic talking-head corpus (or image set) as a frame-record dataset.

    python -m data_prep.synthetic --out=DIR --videos=64 --frames=32 --size=128 --seed=0
    python -m data_prep.synthetic --out=DIR --images=512 --size=128 --seed=1   # an image set

Every video is a random identity, tone, light and background with smooth talking, blinking and
head motion, rendered with the built-in procedural model; records hold the true coefficients and
cameras (tfvgan_jax.data.synthetic). Deterministic given the flags. The dataset goes to
DIR/NAME/1.0.0 (NAME: --name, default 'synthetic' or 'synthetic_images'); --out and --name are
checked before anything is rendered, and --overwrite swaps the new dataset in only once it is
complete. Errors are one line, `error: ...`, naming the flag; --debug shows the traceback.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

from data_prep import cli
from tfvgan_jax import face3d, files
from tfvgan_jax.data import records, synthetic

_OUT = flags.DEFINE_string("out", None, "TFDS data dir the dataset is written into.", required=True)
_VIDEOS = flags.DEFINE_integer("videos", 64, "number of videos")
_FRAMES = flags.DEFINE_integer("frames", 32, "frames per video")
_IMAGES = flags.DEFINE_integer("images", None, "build an image set of this many one-frame identities instead of videos")
_SIZE = flags.DEFINE_integer("size", 128, "crop size S in pixels")
_SEED = flags.DEFINE_integer("seed", 0, "corpus seed")
_DETAIL = flags.DEFINE_string("detail", "medium", "procedural model detail: low, medium, high or a triangle count")
_NAME = flags.DEFINE_string("name", None, "dataset name (default 'synthetic' or 'synthetic_images')")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an existing dataset")
_DEBUG = flags.DEFINE_bool("debug", False, "on an error, show the traceback")


def main(argv):
  del argv
  sys.exit(cli.run(_build, _DEBUG.value))


def _build() -> int:
  images = _IMAGES.value is not None
  videos, frames = (_IMAGES.value, 1) if images else (_VIDEOS.value, _FRAMES.value)
  if videos < 1 or frames < 1 or _SIZE.value < 8:
    raise ValueError(f"need at least one video and frame and a size of 8 px or more "
                     f"(got {videos} videos, {frames} frames, {_SIZE.value} px)")
  name = _NAME.value or ("synthetic_images" if images else "synthetic")
  try:
    records.check_name(name)
  except ValueError as error:
    raise ValueError(f"--name={name}: {error}") from error
  files.check_output_dir(_OUT.value, "--out")
  target = os.path.join(_OUT.value, name, records.DATASET_VERSION)
  if os.path.exists(target) and not _OVERWRITE.value:
    raise FileExistsError(f"--out={_OUT.value}: {target} already exists (--overwrite replaces it)")
  detail = int(_DETAIL.value) if _DETAIL.value.isdigit() else _DETAIL.value
  model = face3d.procedural_model(detail=detail)
  start = time.perf_counter()
  examples = synthetic.corpus_examples(model, videos, frames, _SIZE.value, _SEED.value)
  path = records.write_dataset(_OUT.value, name, examples, model, _SIZE.value, overwrite=_OVERWRITE.value)
  print(f"wrote {videos * frames} frames of {videos} {'images' if images else 'videos'} at {_SIZE.value} px "
        f"({model.name}) to {path} in {time.perf_counter() - start:.1f} s")
  return 0


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag reported as one line (exit status 2)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
    sys.exit(cli.USAGE_STATUS)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
