"""Per-frame training records: a TFDS dataset of ArrayRecord files, written and read without TensorFlow.

One record per video frame (S x S crop, K_id / K_exp coefficients of the dataset's morphable model):

  image           [S, S, 3] uint8 RGB, the aligned crop (stored as JPEG)
  id_coeffs       [K_id] float32, identity coefficients
  exp_coeffs      [K_exp] float32, expression coefficients
  camera          [6] float32: pitch, yaw, roll (radians), scale, tx, ty (pixels of the crop)
  landmarks       [68, 2] float32, iBUG-68 points in crop pixels (x right, y down)
  video_id        str, the video the frame belongs to
  frame_index     int64, the frame's number in its video
  crop_to_source  [2, 3] float32 affine: source (x, y) = A @ [x, y, 1] for a crop pixel (x, y)
  source_path     str, the video or image the crop was cut from
  fit_residual    float32 scalar, the fitter's final error; NaN when the coefficients are ground
                  truth (synthetic data)

On disk it is a standard TFDS dataset (`tfds.builder_from_directory` and `tfds.data_source` read it):

  <out_dir>/<name>/1.0.0/
    dataset_info.json, features.json         splits, shard lengths, feature specs (TFDS)
    metadata.json                            the morphable model (name, content hash), S, K_id,
                                             K_exp, JPEG settings
    <name>-<split>.array_record-NNNNN-of-MMMMM   the records
    video_index-<split>.npz                  where each video's frames are (a cache)

The records come in one of two orders. `write_dataset` goes through TFDS's builder, which orders
them by a hash of their key, so the frames of a video are scattered over the files. The shards of
`data_prep.build` are written by its workers (`write_shard`, then `write_dataset_info` and
`write_video_index` on the launching machine), video by video in frame order, and the video index
is then one (start, length) per video. Readers do not depend on either: `load_video_index` (or
`video_index`) gives every video's records in frame order.

  path = write_dataset(out_dir, "synthetic", examples, model, image_size=128)
  frames = open_dataset(path)        # len(frames), frames[i] -> dict; a grain data source
  check_model(frames, model)         # ValueError when the data was fitted with another model
  videos = video_index(frames)       # {video_id: record indices in frame order}
  index = load_video_index(frames)   # the same as a VideoIndex: O(videos) memory where it can be
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import io
import json
import operator
import os
import re
import shutil
import tempfile
import threading
import types
import zipfile
from typing import Iterable, Iterator, Mapping, NamedTuple, Optional, Union

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from array_record.python import array_record_module
from etils import epath
from PIL import Image

from tfvgan_jax import face3d, files

DATASET_VERSION = "1.0.0"
NUM_LANDMARKS = 68
# Quality 95 with full-resolution chroma (4:4:4): crops are small and the colour at the face's
# edge feeds texture transfer and the masks, so the few extra bytes are worth keeping.
JPEG_QUALITY = 95
JPEG_SUBSAMPLING = "4:4:4"

FIELDS = ("image", "id_coeffs", "exp_coeffs", "camera", "landmarks", "video_id", "frame_index",
          "crop_to_source", "source_path", "fit_residual")
_METADATA_KEYS = ("model_name", "model_hash", "image_size", "num_id", "num_exp", "jpeg_quality",
                  "jpeg_subsampling")
# TFDS file names are "<name>-<split>.<format>-<shard>", so neither name may hold "-" or ".".
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
# Records are parsed this many at a time when the video index is built.
_SCAN_BLOCK = 1024
# Random access reads one record at a time: read-ahead would only fetch bytes that are not used.
_RANDOM_ACCESS_OPTIONS = "readahead_buffer_size:0"

PathLike = Union[str, os.PathLike]


class DatasetError(ValueError):
  """A frame dataset that cannot be read as written; the message names the file (and record)."""


def _features(image_size: int, num_id: int, num_exp: int) -> tfds.features.FeaturesDict:
  """The record schema; images are handed to TFDS as encoded JPEG bytes, which needs no TF."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(image_size, image_size, 3), encoding_format="jpeg"),
      "id_coeffs": tfds.features.Tensor(shape=(num_id,), dtype=np.float32),
      "exp_coeffs": tfds.features.Tensor(shape=(num_exp,), dtype=np.float32),
      "camera": tfds.features.Tensor(shape=(face3d.CAMERA_SIZE,), dtype=np.float32),
      "landmarks": tfds.features.Tensor(shape=(NUM_LANDMARKS, 2), dtype=np.float32),
      "video_id": tfds.features.Text(),
      "frame_index": tfds.features.Scalar(dtype=np.int64),
      "crop_to_source": tfds.features.Tensor(shape=(2, 3), dtype=np.float32),
      "source_path": tfds.features.Text(),
      "fit_residual": tfds.features.Scalar(dtype=np.float32),
  })


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """[S, S, 3] uint8 RGB -> JPEG bytes (4:4:4 chroma)."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING)
  return buffer.getvalue()


def _float_array(example: Mapping, key: str, shape: tuple, where: str) -> np.ndarray:
  value = np.asarray(example[key], np.float32)
  if value.shape != shape:
    raise ValueError(f"{where}: {key} must have shape {shape}, got {value.shape}")
  if not np.all(np.isfinite(value)):
    raise ValueError(f"{where}: {key} holds non-finite values")
  return value


def _jpeg_image(image, size: int, quality: int, where: str) -> bytes:
  """The example's image as JPEG bytes, checked to be an RGB S x S picture."""
  if isinstance(image, bytes):
    try:
      with Image.open(io.BytesIO(image)) as decoded:
        found = (decoded.format, decoded.mode, decoded.size)
    except OSError as error:
      raise ValueError(f"{where}: image bytes are not a readable picture ({error})") from error
    if found != ("JPEG", "RGB", (size, size)):
      raise ValueError(f"{where}: image must be an RGB {size}x{size} JPEG, got {found[0]} {found[1]} "
                       f"{found[2][0]}x{found[2][1]}")
    return image
  array = np.asarray(image)
  if array.dtype != np.uint8 or array.shape != (size, size, 3):
    raise ValueError(f"{where}: image must be uint8 [{size}, {size}, 3] or JPEG bytes, got {array.dtype} "
                     f"{list(array.shape)}")
  return encode_jpeg(array, quality)


def _encode_example(example: Mapping, number: int, image_size: int, num_id: int, num_exp: int,
                    jpeg_quality: int) -> dict:
  """Checks one example dict (fields of the module docstring) and gives TFDS its values."""
  where = f"example {number}"
  missing = [key for key in FIELDS if key not in example]
  unknown = sorted(set(example) - set(FIELDS))
  if missing or unknown:
    raise ValueError(f"{where}: missing fields {missing}, unknown fields {unknown}")
  video_id, frame_index = example["video_id"], example["frame_index"]
  if not isinstance(video_id, str) or not video_id:
    raise ValueError(f"{where}: video_id must be a non-empty str, got {video_id!r}")
  if not isinstance(frame_index, (int, np.integer)) or frame_index < 0:
    raise ValueError(f"{where}: frame_index must be an integer >= 0, got {frame_index!r}")
  where = f"example {number} (video {video_id!r}, frame {frame_index})"
  if not isinstance(example["source_path"], str):
    raise ValueError(f"{where}: source_path must be a str, got {example['source_path']!r}")
  fit_residual = np.float32(example["fit_residual"])
  if np.isinf(fit_residual):
    raise ValueError(f"{where}: fit_residual must be finite, or NaN for ground-truth coefficients")
  return {
      "image": _jpeg_image(example["image"], image_size, jpeg_quality, where),
      "id_coeffs": _float_array(example, "id_coeffs", (num_id,), where),
      "exp_coeffs": _float_array(example, "exp_coeffs", (num_exp,), where),
      "camera": _float_array(example, "camera", (face3d.CAMERA_SIZE,), where),
      "landmarks": _float_array(example, "landmarks", (NUM_LANDMARKS, 2), where),
      "video_id": video_id,
      "frame_index": int(frame_index),
      "crop_to_source": _float_array(example, "crop_to_source", (2, 3), where),
      "source_path": example["source_path"],
      "fit_residual": fit_residual,
  }


class _FrameDatasetInfo(tfds.core.DatasetInfo):
  """TFDS's DatasetInfo, without the look-up of precomputed statistics on TFDS's GCS bucket: none
  exist for these datasets, and TFDS's look-up leaves an empty temporary folder behind every time."""

  def initialize_from_bucket(self) -> None:
    pass


class _FrameBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes one split of frame records; `write_dataset` makes a subclass named after the dataset."""

  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {DATASET_VERSION: "Per-frame crops with 3DMM coefficients, camera, landmarks, source."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> None:
    # Nothing is downloaded, so there is no checksums file to look for beside this module; the
    # look-up would also need `importlib_resources`, which TFDS 4.9.10 uses on Python >= 3.9
    # without declaring it (tensorflow/datasets#11212).
    return None

  def __init__(self, *, examples: Iterable[Mapping], split: str, metadata: dict, **kwargs):
    self._examples = examples
    self._split = split
    self._metadata = metadata
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    meta = self._metadata
    return _FrameDatasetInfo(
        builder=self,
        description=(f"Video frames as {meta['image_size']}x{meta['image_size']} aligned crops, fitted "
                     f"with morphable model {meta['model_name']!r} (content hash {meta['model_hash']})."),
        features=_features(meta["image_size"], meta["num_id"], meta["num_exp"]),
        metadata=tfds.core.MetadataDict(meta),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from the examples given.
    return {self._split: self._generate_examples()}

  def _generate_examples(self):
    meta = self._metadata
    seen = {}
    for number, example in enumerate(self._examples):
      record = _encode_example(example, number, meta["image_size"], meta["num_id"], meta["num_exp"],
                               meta["jpeg_quality"])
      # Checked here: TFDS does refuse a repeated key, but its error path needs TensorFlow.
      frame = (record["video_id"], record["frame_index"])
      if frame in seen:
        raise ValueError(f"examples {seen[frame]} and {number} are both frame {frame[1]} of video {frame[0]!r}")
      seen[frame] = number
      yield f"{frame[0]}/{frame[1]}", record
    if not seen:
      raise ValueError(f"no examples for split {self._split!r}")


def write_dataset(out_dir: PathLike, name: str, examples: Iterable[Mapping], model: face3d.MorphableModel,
                  image_size: int, split: str = "train", jpeg_quality: int = JPEG_QUALITY,
                  num_shards: Optional[int] = None, overwrite: bool = False) -> epath.Path:
  """Writes frame records as a TFDS ArrayRecord dataset (no TensorFlow involved).

  Args:
    out_dir: the TFDS data dir; the dataset goes to `out_dir/name/1.0.0`.
    name: dataset name, lower case letters, digits and "_" (TFDS file names use "-" and ".").
    examples: dicts with exactly the fields of the module docstring. `image` is a uint8
      [S, S, 3] array (encoded as JPEG at `jpeg_quality`, 4:4:4) or RGB S x S JPEG bytes (kept as
      they are); arrays are cast to float32. Each (video_id, frame_index) may appear once.
    model: the morphable model the coefficients belong to; its name and `face3d.content_hash` are
      recorded, and id_coeffs / exp_coeffs must have its K_id / K_exp entries.
    image_size: S.
    split: the split to write (one split per dataset directory).
    jpeg_quality: JPEG quality for array images.
    num_shards: how many ArrayRecord files to write; by default TFDS picks it from the size
      (files of 64 MiB to 1 GiB).
    overwrite: replace an existing dataset at that path instead of refusing. The new version is
      built in a staging folder beside it (`.partial-*`) and swapped in only when complete: a
      failed or killed write leaves the earlier version as it was (locally, the next write removes
      what a killed one left). In an object store the swap removes the earlier version, then moves
      the new files in; if a move fails, they are kept in the staging folder
      (`StagedDatasetKept`).

  Returns:
    The dataset directory `out_dir/name/1.0.0`, with its video index already built.

  Raises:
    ValueError: an invalid name, or an example with a missing, unknown or malformed field (the
      message gives its position in `examples`, video and frame); no dataset is left on disk.
    FileExistsError: the dataset exists and `overwrite` is False.
  """
  check_name(name)
  check_name(split, "split")
  target = epath.Path(out_dir) / name / DATASET_VERSION
  local = not files.is_remote(target)
  if local:
    files.recover_dir(target)
  if target.exists() and not overwrite:
    raise FileExistsError(f"{target} already exists (pass overwrite=True to replace it)")
  metadata = dataset_metadata(model, image_size, jpeg_quality)
  builder_class = _builder_class(name)
  # Built in a staging folder beside the target and swapped in complete: a failed or killed write
  # leaves the earlier version as it was.
  with staged_dataset(target) as staging:
    built = _build(builder_class, examples, split, metadata, staging, num_shards)
    if local:
      video_index(FrameDataset(built, split))
      files.replace_dir(built, target)
    else:
      move_into_store(built, target)
      # The index's fingerprint holds the files' times, which the move changed: built once, here.
      video_index(FrameDataset(target, split))
  return target


@contextlib.contextmanager
def staged_dataset(target: PathLike) -> Iterator[epath.Path]:
  """A new empty folder beside dataset folder `target` to build its replacement in, removed on
  leaving (with the dataset's parent folder, if this made it and no dataset is there: a failed
  first build leaves nothing behind), except after `StagedDatasetKept`, when it holds the only
  complete copy of the new dataset.

  Locally the folder is `files.staging_dir`'s (which first cleans up what killed builds left); in an
  object store a new `.partial-*` prefix beside the target.
  """
  target = epath.Path(target)
  made_parent = not target.parent.exists()
  if files.is_remote(target):
    staging = target.parent / files.partial_name(target.name)
    staging.mkdir(parents=True, exist_ok=True)
  else:
    staging = epath.Path(files.staging_dir(target))
  try:
    yield staging
  except StagedDatasetKept:
    raise
  except BaseException:
    _remove_staging(staging, target, made_parent)
    raise
  _remove_staging(staging, target, made_parent)


class StagedDatasetKept(RuntimeError):
  """Moving a complete new dataset into an object store failed after the earlier one was removed;
  the new files stay in `staging`, which the message names."""

  def __init__(self, message: str, staging: str):
    super().__init__(message)
    self.staging = staging


def _rename_each(sources: list[str], destinations: list[str]) -> None:
  for source, destination in zip(sources, destinations):
    epath.Path(source).rename(destination)


def move_into_store(staging: PathLike, target: PathLike, rename=_rename_each) -> None:
  """Object stores' swap of dataset folder `target` for the complete one in `staging` (they have
  no folder rename): the earlier dataset is removed, then each file of `staging` moved (a copy
  within the store) with `rename(sources, destinations)`, by default one `epath` rename per file
  (`data_prep.build` passes Beam's `FileSystems.rename`).

  Raises:
    StagedDatasetKept: a move failed: the message says where the complete files are.
  """
  staging, target = epath.Path(staging), epath.Path(target)
  if target.exists():
    target.rmtree()
  target.mkdir(parents=True, exist_ok=True)
  sources = sorted(os.fspath(path) for path in staging.iterdir())
  try:
    rename(sources, [os.fspath(target / os.path.basename(source)) for source in sources])
  except Exception as error:  # noqa: BLE001 - whatever the store raised, the staged files are kept
    raise StagedDatasetKept(
        f"{target}: moving the new dataset into place failed ({type(error).__name__}: {error}); the earlier one "
        f"was already removed, and the complete new files are kept in {staging}: move them to {target}",
        os.fspath(staging)) from error


def _remove_staging(staging: epath.Path, target: epath.Path, made_parent: bool) -> None:
  if files.is_remote(target):
    if staging.exists():
      staging.rmtree(missing_ok=True)
    return
  shutil.rmtree(staging, ignore_errors=True)
  if made_parent and not target.exists():
    with contextlib.suppress(OSError):
      target.parent.rmdir()


def dataset_metadata(model: face3d.MorphableModel, image_size: int, jpeg_quality: int = JPEG_QUALITY) -> dict:
  """What metadata.json records of a frame dataset: the model (name, content hash), S, K_id, K_exp, JPEG."""
  return {
      "model_name": model.name,
      "model_hash": face3d.content_hash(model),
      "image_size": int(image_size),
      "num_id": int(model.num_id),
      "num_exp": int(model.num_exp),
      "jpeg_quality": int(jpeg_quality),
      "jpeg_subsampling": JPEG_SUBSAMPLING,
  }


def _builder_class(name: str):
  """The `_FrameBuilder` subclass of dataset `name` (TFDS takes the dataset's name from its class)."""
  return types.new_class(f"FrameBuilder_{name}", (_FrameBuilder,), {"skip_registration": True},
                         lambda namespace: namespace.update(name=name, __module__=__name__))


def _build(builder_class, examples, split: str, metadata: dict, data_dir, num_shards) -> epath.Path:
  builder = builder_class(examples=examples, split=split, metadata=metadata, data_dir=os.fspath(data_dir),
                          file_format="array_record")
  # Nothing is downloaded, but TFDS makes a download folder; keep it out of `data_dir`.
  with tempfile.TemporaryDirectory() as download_dir:
    builder.download_and_prepare(download_dir=download_dir,
                                 download_config=tfds.download.DownloadConfig(num_shards=num_shards))
  return epath.Path(builder.data_path)


# Shards written outside TFDS's builder: `data_prep.build`'s workers write one shard each with
# `write_shard`, and the launching machine then writes the dataset's metadata from what each shard
# reports (`write_dataset_info`, `write_video_index`), without reading a record.

# TFDS's own ArrayRecord writer options (its ArrayRecordFileAdapter): one record per chunk, so that
# any record is read alone.
_WRITER_OPTIONS = "group_size:1"


def shard_path(directory: PathLike, name: str, split: str, index: int, count: int) -> epath.Path:
  """TFDS's path of shard `index` of `count`: `<directory>/<name>-<split>.array_record-NNNNN-of-MMMMM`."""
  template = tfds.core.naming.ShardedFileTemplate(data_dir=epath.Path(directory), dataset_name=name, split=split,
                                                 filetype_suffix="array_record")
  return template.sharded_filepath(shard_index=index, num_shards=count)


@dataclasses.dataclass
class ShardStats:
  """What the dataset's metadata needs from one shard written by `write_shard`.

  Attributes:
    records: records in the shard.
    num_bytes: bytes of the serialized records (what TFDS counts as a split's num_bytes).
    video_ids: the shard's videos, in record order.
    lengths: the records of each of them.
  """

  records: int
  num_bytes: int
  video_ids: list
  lengths: list


def write_shard(path: PathLike, examples: Iterable[Mapping], metadata: Mapping) -> ShardStats:
  """Writes one ArrayRecord shard of a frame dataset, records in the order given.

  The records are the ones `write_dataset` writes (the same checks of each example, TFDS's
  features and serialization); only their order differs: here they come video by video, so that
  the video index is one (start, length) per video (`write_video_index`).

  Args:
    path: the shard's file (`shard_path`).
    examples: dicts with the fields of the module docstring, video by video (no video twice), each
      video's frames in increasing frame_index.
    metadata: `dataset_metadata`'s dict.

  Returns:
    The shard's ShardStats.

  Raises:
    ValueError: a malformed example, a video that comes back after another, or frames out of
      order; nothing is left at `path`.

  The file is written under a temporary name (`files.partial_name`) and renamed when complete: a
  writer that dies mid-shard leaves a `.partial-*` file (which `files.remove_stale_partials`
  removes), never a shard file with part of its records.
  """
  path = epath.Path(path)
  features = _features(metadata["image_size"], metadata["num_id"], metadata["num_exp"])
  remote = files.is_remote(path)
  if remote:
    handle, temporary = tempfile.mkstemp(suffix=".array_record")
    os.close(handle)
  else:
    temporary = os.fspath(path.parent / files.partial_name(path.name))
  stats = ShardStats(0, 0, [], [])
  done, last_frame = set(), None
  writer = array_record_module.ArrayRecordWriter(temporary, _WRITER_OPTIONS)
  try:
    try:
      for number, example in enumerate(examples):
        record = _encode_example(example, number, metadata["image_size"], metadata["num_id"], metadata["num_exp"],
                                 metadata["jpeg_quality"])
        video_id, frame = record["video_id"], record["frame_index"]
        if stats.video_ids and video_id == stats.video_ids[-1]:
          if frame <= last_frame:
            raise ValueError(f"{path}: example {number}: frame {frame} of video {video_id!r} comes after frame "
                             f"{last_frame}; each video's frames must come in increasing frame_index")
          stats.lengths[-1] += 1
        else:
          if video_id in done:
            raise ValueError(f"{path}: example {number}: video {video_id!r} comes back after another video; "
                             "examples must come video by video")
          if stats.video_ids:
            done.add(stats.video_ids[-1])
          stats.video_ids.append(video_id)
          stats.lengths.append(1)
        last_frame = frame
        raw = features.serialize_example(features.encode_example(record))
        writer.write(raw)
        stats.records += 1
        stats.num_bytes += len(raw)
    finally:
      writer.close()
    if remote:
      with open(temporary, "rb") as source, path.open("wb") as target:
        shutil.copyfileobj(source, target, 1 << 24)
    else:
      os.replace(temporary, path)
  finally:
    with contextlib.suppress(OSError):
      os.remove(temporary)  # after a failure (or the local copy of a remote shard)
  return stats


def write_dataset_info(directory: PathLike, name: str, split: str, metadata: Mapping, shard_lengths: list,
                       num_bytes: int) -> None:
  """Writes dataset_info.json, features.json and metadata.json beside shards that `write_shard`
  wrote (as `shard_path` names them): the files TFDS's builder writes after its own shards, so that
  `open_dataset`, `tfds.builder_from_directory` and `tfds.data_source` read the folder.

  Args:
    directory: the dataset's version folder (`<data dir>/<name>/1.0.0`, or a folder that becomes it).
    name, split: the dataset and split names of the shards' file names.
    metadata: `dataset_metadata`'s dict.
    shard_lengths: records in each shard, in shard order.
    num_bytes: the serialized records' bytes, summed over the shards.
  """
  check_name(name)
  check_name(split, "split")
  directory = epath.Path(directory)
  # The builder only lends its DatasetInfo (the same one `write_dataset` writes); it looks for a
  # dataset under its data_dir, which must therefore not be `directory`.
  with tempfile.TemporaryDirectory() as nowhere:
    builder = _builder_class(name)(examples=(), split=split, metadata=dict(metadata), data_dir=nowhere,
                                   file_format="array_record")
    info = builder.info
    template = tfds.core.naming.ShardedFileTemplate(data_dir=directory, dataset_name=name, split=split,
                                                   filetype_suffix="array_record")
    info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
        name=split, shard_lengths=[int(n) for n in shard_lengths], num_bytes=int(num_bytes),
        filename_template=template)]))
    info.write_to_directory(directory)


def check_name(name: str, label: str = "name") -> str:
  """Refuses a dataset (or split) name TFDS cannot use in its file names; returns it.

  Raises:
    ValueError: the name is not lower case letters, digits and '_', starting with a letter.
  """
  if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
    raise ValueError(f"dataset {label} {name!r} must be lower case letters, digits and '_', starting with a letter")
  return name


def _dataset_dir(path: PathLike) -> epath.Path:
  """The version directory (holding dataset_info.json) at `path` or its only one under `path`."""
  path = epath.Path(path)
  if (path / "dataset_info.json").exists():
    return path
  if not path.is_dir():
    raise FileNotFoundError(f"{path}: no such dataset directory")
  versions = sorted(child for child in path.iterdir() if (child / "dataset_info.json").exists())
  if not versions:
    raise FileNotFoundError(f"{path}: no TFDS dataset here (no dataset_info.json in it or in its subdirectories)")
  if len(versions) > 1:
    raise DatasetError(f"{path}: holds several versions {[v.name for v in versions]}; open one of them")
  return versions[0]


def _read_info(path: epath.Path) -> tfds.core.DatasetInfo:
  try:
    info = tfds.builder_from_directory(os.fspath(path)).info
  except Exception as error:
    raise DatasetError(f"{path}: cannot read the TFDS dataset info ({type(error).__name__}: {error})") from error
  metadata = info.metadata or {}
  missing = [key for key in _METADATA_KEYS if key not in metadata]
  if missing:
    raise DatasetError(f"{path}: not a frame-record dataset; metadata.json lacks {missing}")
  return info


def _open_reader(path: epath.Path, expected: int, options: str = ""):
  """Opens one shard, checking it is a whole ArrayRecord file with the records TFDS wrote."""
  if not path.exists():
    raise DatasetError(f"{path}: shard file is missing")
  reader = array_record_module.ArrayRecordReader(os.fspath(path), options)
  # The reader does not raise on a damaged file: it opens with a bad status and reads nothing.
  if not reader.ok():
    raise DatasetError(f"{path}: not a readable ArrayRecord file ({path.stat().length} bytes; truncated or corrupt)")
  if reader.num_records() != expected:
    raise DatasetError(f"{path}: holds {reader.num_records()} records, dataset_info.json says {expected}")
  return reader


class FrameDataset:
  """One split of a frame dataset, read at random: `len(frames)`, `frames[i]` -> decoded record.

  A grain `RandomAccessDataSource` (`grain.MapDataset.source(frames)`, `grain.DataLoader`): it
  pickles without its open files, which each process reopens on first use, and it may be read
  from several threads.

  Attributes:
    path: the dataset's version directory.
    split: the split read.
    info: the TFDS `DatasetInfo`.
    metadata: model_name, model_hash, image_size, num_id, num_exp, jpeg_quality, jpeg_subsampling.
    files: the split's shard files, in record order.
    lengths: [len(files)] records per shard.
  """

  def __init__(self, path: PathLike, split: str = "train"):
    self.path = _dataset_dir(path)
    self.split = split
    self.info = _read_info(self.path)
    self.metadata = dict(self.info.metadata)
    if split not in self.info.splits:
      raise DatasetError(f"{self.path}: no split {split!r}; it has {sorted(self.info.splits.keys())}")
    split_info = self.info.splits[split]
    self.files = [epath.Path(f) for f in split_info.filepaths]
    self.lengths = np.asarray(split_info.shard_lengths, np.int64)
    self._ends = np.cumsum(self.lengths)
    self._readers = [_open_reader(f, n, _RANDOM_ACCESS_OPTIONS) for f, n in zip(self.files, self.lengths)]
    self._lock = threading.Lock()

  @property
  def image_size(self) -> int:
    return int(self.metadata["image_size"])

  def __len__(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def __repr__(self) -> str:
    return f"FrameDataset({os.fspath(self.path)!r}, split={self.split!r}, {len(self)} records)"

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_readers"], state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._readers = [None] * len(self.files)
    self._lock = threading.Lock()

  def locate(self, index: int) -> tuple[int, int]:
    """The shard (position in `files`) holding record `index`, and the record's position in it."""
    shard = int(np.searchsorted(self._ends, index, side="right"))
    return shard, index - (int(self._ends[shard - 1]) if shard else 0)

  def _reader(self, shard: int):
    if self._readers[shard] is None:
      with self._lock:
        if self._readers[shard] is None:
          self._readers[shard] = _open_reader(self.files[shard], self.lengths[shard], _RANDOM_ACCESS_OPTIONS)
    return self._readers[shard]

  def read_raw(self, index: int) -> bytes:
    """The serialized record `index` (a tf.train.Example proto, as TFDS writes it)."""
    index = operator.index(index)
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range: {self.path} split {self.split!r} has {len(self)}")
    shard, position = self.locate(index)
    try:
      return self._reader(shard).read([position])[0]
    except RuntimeError as error:
      raise DatasetError(f"{self.files[shard]}: record {position} (dataset index {index}) cannot be read: "
                         f"{error}") from error

  def __getitem__(self, index: int) -> dict:
    """Record `index` decoded.

    Returns:
      image [S, S, 3] uint8; id_coeffs [K_id], exp_coeffs [K_exp], camera [6], landmarks [68, 2],
      crop_to_source [2, 3] float32; video_id, source_path str; frame_index int64 and
      fit_residual float32 NumPy scalars.
    """
    index = operator.index(index)
    if index < 0:
      index += len(self)
    raw = self.read_raw(index)
    shard, position = self.locate(index)
    where = f"{self.files[shard]}: record {position} (dataset index {index})"
    return _decode(self.info.features, raw, self.image_size, where)


def _parse(features: tfds.features.FeaturesDict, raw: bytes, where: str, decoders=None) -> dict:
  """Deserializes a record with `features` (and TFDS `decoders`); every feature must be present."""
  try:
    example = features.deserialize_example_np(raw, decoders=decoders)
  except Exception as error:
    raise DatasetError(f"{where}: not a valid record ({type(error).__name__}: {error})") from error
  # TFDS's NumPy parser fills a field absent from the record with None instead of failing.
  missing = [key for key in features.keys() if example.get(key) is None]
  if missing:
    raise DatasetError(f"{where}: record lacks fields {missing}")
  return example


def _decode(features: tfds.features.FeaturesDict, raw: bytes, image_size: int, where: str) -> dict:
  # PIL decodes the JPEG here rather than in TFDS, so that a bad image names its record.
  example = _parse(features, raw, where, decoders={"image": tfds.decode.SkipDecoding()})
  try:
    with Image.open(io.BytesIO(example["image"])) as decoded:
      image = np.asarray(decoded)
  except OSError as error:
    raise DatasetError(f"{where}: image is not a readable JPEG ({error})") from error
  if image.shape != (image_size, image_size, 3):
    raise DatasetError(f"{where}: image is {list(image.shape)}, the dataset's are [{image_size}, {image_size}, 3]")
  example["image"] = image
  for key in ("video_id", "source_path"):
    example[key] = example[key].decode("utf-8")
  example["frame_index"] = np.int64(example["frame_index"])
  example["fit_residual"] = np.float32(example["fit_residual"])
  return example


def open_dataset(path: PathLike, split: str = "train") -> FrameDataset:
  """Opens a frame dataset for random access, checking every shard file first.

  Args:
    path: the version directory (`out_dir/name/1.0.0`) or the dataset directory above it.
    split: the split to read.

  Raises:
    FileNotFoundError: no dataset at `path`.
    DatasetError: not a frame dataset, no such split, or a shard file that is missing, truncated,
      corrupt or holds another number of records than recorded (the message names the file).
  """
  return FrameDataset(path, split)


def check_model(dataset: Union[FrameDataset, tfds.core.DatasetInfo, PathLike], model: face3d.MorphableModel) -> None:
  """Refuses a dataset whose coefficients belong to another morphable model.

  Args:
    dataset: a FrameDataset, its TFDS DatasetInfo, or a dataset path.
    model: the model the caller will combine the coefficients with.

  Raises:
    ValueError: the dataset records another model; the message names the dataset's path and both
      models' names and content hashes.
  """
  if isinstance(dataset, FrameDataset):
    path, metadata = dataset.path, dataset.metadata
  elif isinstance(dataset, tfds.core.DatasetInfo):
    path, metadata = dataset.data_dir, dataset.metadata or {}
    if "model_hash" not in metadata:
      raise DatasetError(f"{path}: not a frame-record dataset; its metadata has no model_hash")
  else:
    path = _dataset_dir(dataset)
    metadata = _read_info(path).metadata
  expected = face3d.content_hash(model)
  if metadata["model_hash"] != expected:
    raise ValueError(f"{path} was fitted with morphable model {metadata['model_name']!r} (content hash "
                     f"{metadata['model_hash']}), not with {model.name!r} (content hash {expected}): "
                     "load the dataset's model or refit the data")


# Files stat-ed at once: on an object store each stat is a round trip, and a corpus has thousands
# of shards.
_STAT_THREADS = 32


def _fingerprint_of(split: str, paths: Iterable[epath.Path]) -> str:
  """Names, sizes and modification times of a split's files: any rewrite changes it."""

  def stat(path):
    found = path.stat()
    return path.name, found.length, found.mtime

  paths = list(paths)
  if len(paths) > 1:
    with concurrent.futures.ThreadPoolExecutor(min(_STAT_THREADS, len(paths))) as pool:
      stats = list(pool.map(stat, paths))
  else:
    stats = [stat(path) for path in paths]
  return json.dumps({"split": split, "files": stats})


def _fingerprint(dataset: FrameDataset) -> str:
  return _fingerprint_of(dataset.split, dataset.files)


def _scan_fields(dataset: FrameDataset) -> tuple[np.ndarray, np.ndarray]:
  """[N] video ids (str) and [N] frame indices (int64) of every record, reading only those fields."""
  features = tfds.features.FeaturesDict({key: dataset.info.features[key] for key in ("video_id", "frame_index")})
  video_ids, frames = [], []
  for path, length in zip(dataset.files, dataset.lengths):
    # A sequential reader of its own: read-ahead pays off when every record is read in order.
    reader = _open_reader(path, length)
    try:
      for start in range(0, int(length), _SCAN_BLOCK):
        try:
          block = reader.read(start, min(start + _SCAN_BLOCK, int(length)))
        except RuntimeError as error:
          raise DatasetError(f"{path}: records {start}.. cannot be read: {error}") from error
        for position, raw in enumerate(block, start):
          example = _parse(features, raw, f"{path}: record {position}")
          video_ids.append(example["video_id"].decode("utf-8"))
          frames.append(example["frame_index"])
    finally:
      reader.close()
  return np.array(video_ids, dtype=np.str_), np.array(frames, dtype=np.int64)


class VideoIndex(NamedTuple):
  """The records of each video of a dataset, in frame order, in O(videos) memory where it can be.

  Video v's frames are the records `records[starts[v] : starts[v] + lengths[v]]`; when `records`
  is None (every video's records are consecutive and in frame order, as `data_prep.build` writes
  them) they are the records `starts[v] ... starts[v] + lengths[v] - 1`, and the index holds no
  per-frame array at all. The fields are `sampling.FrameIndex`'s: `FrameIndex(*index)`.

  Attributes:
    video_ids: [V] the videos' ids, sorted.
    starts: [V] int64.
    lengths: [V] int64 frame counts.
    records: [N] int64 record indices, video by video in frame order; or None (see above).
  """

  video_ids: tuple
  starts: np.ndarray
  lengths: np.ndarray
  records: Optional[np.ndarray]

  def record_indices(self, video: int) -> np.ndarray:
    """[T] int64: the records of video number `video`, in frame order."""
    start, length = int(self.starts[video]), int(self.lengths[video])
    if self.records is None:
      return np.arange(start, start + length, dtype=np.int64)
    return self.records[start:start + length]


# The layout of video_index-<split>.npz; an older file is rebuilt.
_INDEX_VERSION = 2


def _index_from_fields(path: epath.Path, video_ids: np.ndarray, frames: np.ndarray) -> VideoIndex:
  """The VideoIndex of records whose video ids and frame indices are these."""
  order = np.lexsort((frames, video_ids))
  video_ids, frames = video_ids[order], frames[order]
  same = (video_ids[1:] == video_ids[:-1]) & (frames[1:] == frames[:-1])
  if np.any(same):
    first = int(np.argmax(same))
    raise DatasetError(f"{path}: records {order[first]} and {order[first + 1]} are both frame "
                       f"{frames[first]} of video {video_ids[first]!r}")
  starts = np.flatnonzero(np.concatenate([[True], video_ids[1:] != video_ids[:-1]])) if len(order) else np.zeros(0)
  lengths = np.diff(np.append(starts, len(order))).astype(np.int64)
  ids = tuple(str(video_ids[start]) for start in starts)
  order = order.astype(np.int64)
  if np.array_equal(order, np.arange(len(order))):  # video by video, in frame order
    return VideoIndex(ids, starts.astype(np.int64), lengths, None)
  return VideoIndex(ids, starts.astype(np.int64), lengths, order)


def _index_arrays(index: VideoIndex, fingerprint: str) -> dict:
  """The npz arrays of an index: the ids as one UTF-8 blob and its ends (a [V] str array would
  take 4 bytes per character of the longest id, for every video)."""
  encoded = [video_id.encode("utf-8") for video_id in index.video_ids]
  arrays = {"fingerprint": np.str_(fingerprint), "version": np.int64(_INDEX_VERSION),
            "video_id_bytes": np.frombuffer(b"".join(encoded), np.uint8),
            "video_id_ends": np.cumsum([len(e) for e in encoded], dtype=np.int64),
            "starts": np.asarray(index.starts, np.int64), "lengths": np.asarray(index.lengths, np.int64)}
  if index.records is not None:
    arrays["records"] = np.asarray(index.records, np.int64)
  return arrays


def _index_from_arrays(stored) -> VideoIndex:
  if int(stored["version"]) != _INDEX_VERSION:
    raise ValueError(f"index version {int(stored['version'])}, not {_INDEX_VERSION}")
  blob = stored["video_id_bytes"].tobytes()
  ends = stored["video_id_ends"]
  begins = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
  ids = tuple(blob[b:e].decode("utf-8") for b, e in zip(begins.tolist(), ends.tolist()))
  records = stored["records"] if "records" in stored.files else None
  return VideoIndex(ids, stored["starts"], stored["lengths"], records)


def _save_index(cache: epath.Path, index: VideoIndex, fingerprint: str) -> None:
  buffer = io.BytesIO()
  np.savez(buffer, **_index_arrays(index, fingerprint))
  # Written aside and renamed, so that concurrent readers never see a partial file.
  if files.is_remote(cache):
    cache.write_bytes(buffer.getvalue())
  else:
    files.write_bytes(cache, buffer.getvalue())


def _index_file(directory: epath.Path, split: str) -> epath.Path:
  return directory / f"video_index-{split}.npz"


def write_video_index(directory: PathLike, split: str, shard_files: list, video_ids: list,
                            lengths: list) -> VideoIndex:
  """Writes the video index of shards written video by video (`write_shard`), from what they
  reported: no record is read, and the index holds O(videos) numbers.

  Args:
    directory: the dataset's version folder.
    split: its split.
    shard_files: the split's shard files, in shard order (their sizes and times make the
      index's fingerprint).
    video_ids: every video, in record order (the shards' `ShardStats.video_ids`, concatenated in
      shard order).
    lengths: the records of each.

  Returns:
    The index written to `video_index-<split>.npz`.
  """
  lengths = np.asarray(lengths, np.int64)
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
  order = sorted(range(len(video_ids)), key=video_ids.__getitem__)
  ids = tuple(video_ids[i] for i in order)
  if any(a == b for a, b in zip(ids, ids[1:])):
    repeated = next(a for a, b in zip(ids, ids[1:]) if a == b)
    raise DatasetError(f"{directory}: video {repeated!r} is in more than one place of the shards")
  index = VideoIndex(ids, starts[order], lengths[order], None)
  _save_index(_index_file(epath.Path(directory), split),
              index, _fingerprint_of(split, [epath.Path(f) for f in shard_files]))
  return index


def load_video_index(dataset: FrameDataset) -> VideoIndex:
  """The dataset's VideoIndex, from its cache `video_index-<split>.npz` beside the records.

  A dataset written by `data_prep.build` comes with it (no per-frame array in it or in memory).
  A missing cache, one of an older layout or one whose files changed since (its fingerprint:
  their names, sizes and times) is rebuilt by reading every record's video_id and frame_index, and
  saved again where the folder is writable.

  Raises:
    DatasetError: two records are the same frame of the same video, or a record cannot be read.
  """
  cache = _index_file(dataset.path, dataset.split)
  fingerprint = _fingerprint(dataset)
  if cache.exists():
    try:
      with cache.open("rb") as f, np.load(f, allow_pickle=False) as stored:
        if str(stored["fingerprint"]) == fingerprint:
          return _index_from_arrays(stored)
      logging.info("%s: the records changed since it was written; rebuilding it", cache)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
      logging.warning("%s: unreadable or of an older layout (%s); rebuilding it", cache, error)
  index = _index_from_fields(dataset.path, *_scan_fields(dataset))
  try:
    _save_index(cache, index, fingerprint)
  except OSError as error:
    logging.warning("%s: cannot cache the video index (%s); it will be rebuilt on every open", cache, error)
  return index


def video_index(dataset: FrameDataset) -> dict[str, np.ndarray]:
  """Record indices of each video in frame order: `load_video_index` as a dict.

  Frame numbers need not be contiguous. For a large dataset prefer `load_video_index`, which
  holds no per-frame array when the records are video by video.

  Returns:
    {video_id: [T] int64 record indices sorted by frame_index}, ready for
    `sampling.FrameIndex.from_videos`.

  Raises:
    DatasetError: two records are the same frame of the same video, or a record cannot be read.
  """
  index = load_video_index(dataset)
  return {video_id: index.record_indices(v) for v, video_id in enumerate(index.video_ids)}
