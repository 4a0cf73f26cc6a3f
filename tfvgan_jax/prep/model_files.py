"""Where the MediaPipe face models (.tflite) live, and how they are taken out of MediaPipe's wheel.

Two files are needed: the short-range BlazeFace detector and the 468-point Face Mesh landmark
model, both from MediaPipe 0.10.21 (Apache-2.0). Three more from the same wheel are optional
(`OPTIONAL_MODELS`, `optional_model`): the full-range face detector (small and distant faces) and
the palm detector and hand-landmark model (hands in front of an edited face). They are not shipped with this package and never
downloaded at import or test time: `python -m data_prep.models fetch` downloads the wheel once
and extracts them into `models_dir()`:

  $TFVGAN_MODELS                 if set
  ~/.cache/tfvgan_jax/models     otherwise

`find_models` resolves the paths: explicit file paths win; else a `face_landmarker.task` bundle
(a zip holding `face_detector.tflite` and `face_landmarks_detector.tflite`) is unzipped once into
the models directory; else the two files already in the models directory are used. A missing file
raises `ModelFilesError` naming the path and the command that fetches it.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import zipfile
from typing import NamedTuple

from tfvgan_jax import files

FETCH_COMMAND = "python -m data_prep.models fetch"
MEDIAPIPE_VERSION = "0.10.21"

# Members of the MediaPipe wheel, and the sha256 of each as released in MEDIAPIPE_VERSION.
DETECTOR_FILE = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
DETECTOR_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
LANDMARK_FILE = "mediapipe/modules/face_landmark/face_landmark.tflite"
LANDMARK_SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"

# Optional models of the same wheel (Apache-2.0): editing uses them where they are present.
FULL_RANGE_DETECTOR_FILE = "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite"
FULL_RANGE_DETECTOR_SHA256 = "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"
PALM_DETECTOR_FILE = "mediapipe/modules/palm_detection/palm_detection_full.tflite"
PALM_DETECTOR_SHA256 = "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54"
HAND_LANDMARK_FILE = "mediapipe/modules/hand_landmark/hand_landmark_full.tflite"
HAND_LANDMARK_SHA256 = "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3"
OPTIONAL_MODELS = {FULL_RANGE_DETECTOR_FILE: FULL_RANGE_DETECTOR_SHA256, PALM_DETECTOR_FILE: PALM_DETECTOR_SHA256,
                   HAND_LANDMARK_FILE: HAND_LANDMARK_SHA256}

# Members of a `face_landmarker.task` bundle.
TASK_DETECTOR_FILE = "face_detector.tflite"
TASK_LANDMARK_FILE = "face_landmarks_detector.tflite"


class ModelFilesError(RuntimeError):
  """A model file that is missing or not the expected one; the message says which and what to do."""


class ModelPaths(NamedTuple):
  """Paths of the detector and landmark `.tflite` files."""

  detector: str
  landmarks: str


def models_dir() -> str:
  """The directory that holds the fetched model files: `$TFVGAN_MODELS` or the user cache."""
  configured = os.environ.get("TFVGAN_MODELS")
  if configured:
    return os.path.abspath(os.path.expanduser(configured))
  return os.path.join(os.path.expanduser("~"), ".cache", "tfvgan_jax", "models")


def sha256_of(path) -> str:
  """Hex sha256 digest of a file's bytes, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()



def _read_member(archive_path: str, archive: zipfile.ZipFile, member: str) -> bytes:
  try:
    return archive.read(member)
  except KeyError:
    raise ModelFilesError(f"{archive_path}: has no member {member!r}") from None


def _open_zip(path) -> zipfile.ZipFile:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ModelFilesError(f"{path}: no such file")
  try:
    return zipfile.ZipFile(path)
  except zipfile.BadZipFile:
    raise ModelFilesError(f"{path}: not a zip archive") from None


def extract_from_wheel(wheel_path, out_dir) -> ModelPaths:
  """Extracts the two model files, and those of the `OPTIONAL_MODELS` it holds, from a MediaPipe
  wheel into `out_dir`, checking their sha256.

  Only these members are read. Each file is written under its base name, atomically (a reader
  never sees half a file), and only after its hash matched. Raises `ModelFilesError` naming the
  wheel and the member when one is missing or its hash differs from `DETECTOR_SHA256` /
  `LANDMARK_SHA256`.
  """
  wheel_path = os.fspath(wheel_path)
  expected = {DETECTOR_FILE: DETECTOR_SHA256, LANDMARK_FILE: LANDMARK_SHA256, **OPTIONAL_MODELS}
  written = []
  with _open_zip(wheel_path) as wheel:
    present = set(wheel.namelist())
    contents = {member: _read_member(wheel_path, wheel, member) for member in expected
                if member not in OPTIONAL_MODELS or member in present}
  for member, data in contents.items():
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected[member]:
      raise ModelFilesError(
          f"{wheel_path}: member {member!r} has sha256 {digest}, expected {expected[member]} "
          f"(MediaPipe {MEDIAPIPE_VERSION})")
  for member, data in contents.items():
    path = os.path.join(os.fspath(out_dir), posixpath.basename(member))
    files.write_bytes(path, data)
    written.append(path)
  return ModelPaths(*written[:2])


def optional_model(member: str, path=None):
  """The path of one of `OPTIONAL_MODELS` (a wheel member name): `path` if given, else its file in
  `models_dir()`; None where that file does not exist (the caller goes on without it)."""
  path = os.fspath(path) if path is not None else os.path.join(models_dir(), posixpath.basename(member))
  return path if os.path.isfile(path) else None


def _unpack_task(task_path: str) -> ModelPaths:
  """Unzips the two models of a `.task` bundle into the models directory, once per bundle content."""
  digest = sha256_of(task_path)
  stem = os.path.splitext(os.path.basename(task_path))[0]
  out_dir = os.path.join(models_dir(), f"{stem}-{digest[:12]}")
  paths = ModelPaths(os.path.join(out_dir, TASK_DETECTOR_FILE),
                     os.path.join(out_dir, TASK_LANDMARK_FILE))
  if all(os.path.isfile(path) for path in paths):
    return paths
  with _open_zip(task_path) as bundle:
    for member, path in zip((TASK_DETECTOR_FILE, TASK_LANDMARK_FILE), paths):
      files.write_bytes(path, _read_member(task_path, bundle, member))
  return paths


def find_models(detector=None, landmarks=None, task=None) -> ModelPaths:
  """Resolves the detector and landmark model paths (see the module docstring for the order).

  Args:
    detector, landmarks: explicit `.tflite` paths; each wins over the bundle and the cache.
    task: optional path of a `face_landmarker.task` bundle.

  Raises:
    ModelFilesError: a resolved file does not exist; the message names it and `FETCH_COMMAND`.
  """
  if task is not None:
    defaults = _unpack_task(os.fspath(task))
  else:
    directory = models_dir()
    defaults = ModelPaths(os.path.join(directory, posixpath.basename(DETECTOR_FILE)),
                          os.path.join(directory, posixpath.basename(LANDMARK_FILE)))
  paths = ModelPaths(os.fspath(detector) if detector is not None else defaults.detector,
                     os.fspath(landmarks) if landmarks is not None else defaults.landmarks)
  for name, path in zip(ModelPaths._fields, paths):
    if not os.path.isfile(path):
      raise ModelFilesError(
          f"{path}: {name} model file not found; fetch the MediaPipe face models with "
          f"`{FETCH_COMMAND}` (or set TFVGAN_MODELS to the directory that holds them)")
  return paths
