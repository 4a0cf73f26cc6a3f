"""Turns a folder of talking-head videos into the frame records `configs/voxceleb.py` trains on.

    python -m data_prep.build --input='DIR/**/*.mp4' --out=OUT --face_model=model.npz \\
        [--name=videos] [--size=256] [--runner=DirectRunner]

An Apache Beam pipeline with one element per video. Each element is decoded as a stream, its faces
detected every --detect_every frames and followed between with Face Mesh landmarks, the main face's
track smoothed (--smooth), cropped with one square for the whole clip (--crop_scale), resized to
--size and fitted with the morphable model (one identity per clip, per-frame expression and
camera). What each video gives is written to OUT/prepared/<name>.npz, its statistics beside it
(<name>.json). The written videos are then spread over shards (contiguous runs of sorted ids, of
about equal bytes; --num_shards, by default TFDS's choice of 64 MiB to 1 GiB each), and each shard
is written by a worker as one ArrayRecord file, reading each of its prepared videos once. The
launching machine only writes the metadata from what the shards report (dataset_info.json,
features.json, metadata.json, the video index): no record passes through it. The result is one
TFDS ArrayRecord dataset, OUT/<name>/1.0.0, the path to give as `--config.data.videos`.

Every path the --input glob matches ends up in the summary, printed and saved as OUT/summary.json:
`videos_in`, `written`, `skipped` ({reason: count}; reasons are missing (a broken link too),
not_a_file (a folder), empty_file, unreadable, no_video_stream, decode_error, no_frames, no_face,
too_short, face_too_small, fit_failed, and error for anything unexpected, with its message),
`frames` (records written), `mean_residual` (mean landmark reprojection error of the fit, crop
pixels), `truncated` (videos written whose file ended before the frame count its container
declares: the frames that did decode are kept, and the video's line says how many of how many),
and besides those the fraction of decoded frames that were fitted, the residual as a fraction of
the inter-ocular distance, the pose jitter, the time taken (`seconds`, and
`seconds_after_pipeline`, the launching machine's own part), the number of shards and each video's
own line.

A video's id (the records' video_id) is its path below the inputs' common folder without the
extension; inputs that would share one (x.mp4 and x.MP4) get a short hash of their path added, so
distinct inputs always have distinct ids, the same on every run. The dataset is built beside the
previous one and swapped in when complete; summary.json is written after it, atomically. A shard
is written under a temporary name and renamed when whole, so a worker that dies mid-shard leaves
no partial shard in the dataset (the runner writes the shard again).

Re-running with the same --out skips the videos already prepared with the same settings and face
model, and the tracking stage is cached per input in OUT/tracks/ (independent of the face model
and the output size), so changing the face model or the size re-fits without decoding for faces
again. Each worker keeps its compiled fits in JAX's persistent compilation cache
(--compilation_cache), so that only the first process of the first run compiles them. The
detector and landmark models come from `python -m data_prep.models fetch` (or
--detector / --landmarks / --landmarker_task).

Apache Beam's pipeline options pass through by name (any other flag is an error):
`--runner=DirectRunner --direct_num_workers=8 --direct_running_mode=multi_processing` uses 8 local
processes; for a full corpus use
`--runner=DataflowRunner --project=... --region=... --temp_location=gs://...` (or FlinkRunner,
SparkRunner) with --out on storage every worker can write (see the README).

Errors are one line, `error: ...`, naming the flag or file; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import concurrent.futures
import dataclasses
import glob
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from typing import Optional

import apache_beam as beam
import numpy as np
import tensorflow_datasets as tfds
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from etils import epath

from data_prep import cli
from tfvgan_jax import compilation, face3d, files
from tfvgan_jax.data import records
from tfvgan_jax.prep import clip as clip_lib
from tfvgan_jax.prep import fit as fit_lib
from tfvgan_jax.prep import model_files
from tfvgan_jax.prep import track as track_lib
from tfvgan_jax.prep import video as video_lib

SUMMARY_FILE = "summary.json"
# Bumped when a change makes earlier prepared videos stale.
_PREPARED_VERSION = 1


def find_inputs(pattern: str) -> list[str]:
  """Sorted paths matching `pattern`: Python glob rules (`**` spans folders) for local paths,
  Beam's filesystems for remote ones (gs://, s3://, ...). Every match is returned, folders and
  broken links too, so that the job accounts for each (they are skipped with their reason)."""
  if files.is_remote(pattern):
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
  return sorted(set(glob.glob(os.path.expanduser(pattern), recursive=True)))


def video_ids(paths: list[str]) -> dict[str, str]:
  """A readable id per path, distinct for distinct paths and the same on every run over the same
  inputs: the path below the inputs' common folder, without extension (VoxCeleb2's
  id00012/abc/00001.mp4 -> 'id00012/abc/00001'). Paths that would share an id (x.mp4 and x.MP4,
  x.mp4 and x.avi) each get a short hash of their relative path added: 'x-1a2b3c4d'."""
  if not paths:
    return {}
  base = os.path.dirname(os.path.commonprefix(paths)) if len(paths) > 1 else os.path.dirname(paths[0])
  relative = {path: path[len(base):].lstrip("/") if base else path for path in paths}
  stems = {path: os.path.splitext(name)[0] or name for path, name in relative.items()}

  def with_hash(path: str, digits: int) -> str:
    return f"{stems[path]}-{hashlib.sha1(relative[path].encode()).hexdigest()[:digits]}"

  shared = collections.Counter(stems.values())
  ids = {path: stem if shared[stem] == 1 else with_hash(path, 8) for path, stem in stems.items()}
  # A file named like another's hashed id, or two short hashes alike: the full hash for those.
  taken = collections.Counter(ids.values())
  return {path: with_hash(path, 40) if taken[video_id] > 1 else video_id for path, video_id in ids.items()}


@dataclasses.dataclass(frozen=True)
class DatasetSettings:
  """Where the workers write the dataset's shards, and what goes in them (plain values).

  Attributes:
    directory: the folder the shards are written to, which becomes OUT/NAME/1.0.0 when complete.
    name: the dataset's name (TFDS's file names: NAME-SPLIT.array_record-NNNNN-of-MMMMM).
    metadata: `records.dataset_metadata`'s items (the model, the crop size, the JPEG settings).
    num_shards: how many shards; 0 picks it from the size as TFDS does (64 MiB to 1 GiB each),
      never more than the videos.
    split: the split written.
  """

  directory: str
  name: str
  metadata: tuple
  num_shards: int = 0
  split: str = "train"


@dataclasses.dataclass(frozen=True)
class JobSettings:
  """What the pipeline's workers need (plain values: it is pickled to them)."""

  out: str
  face_model: str
  detector: str
  landmarks: str
  prep: clip_lib.PrepSettings
  num_threads: int = 1
  dataset: Optional[DatasetSettings] = None
  compilation_cache: str = ""
  model_hash: str = ""  # the face model's `face3d.content_hash`, if the launching machine knows it

  def prepared_key(self, model_hash: str) -> str:
    """Digest of everything a prepared video depends on besides its track."""
    fields = {"prep": dataclasses.asdict(self.prep), "model": model_hash, "version": _PREPARED_VERSION}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _remote_identity(path: str) -> dict:
  metadata = FileSystems.match([path])[0].metadata_list[0]
  return {"path": path, "size": metadata.size_in_bytes, "mtime": metadata.last_updated_in_seconds}


class PrepareVideo(beam.DoFn):
  """One video -> OUT/prepared/<name>.npz (and its statistics beside it, <name>.json) and its status
  for the summary, as a JSON line."""

  def __init__(self, settings: JobSettings):
    self.settings = settings

  def setup(self):
    from tfvgan_jax.prep import detect, landmarks  # the LiteRT interpreters live on the worker
    settings = self.settings
    if settings.compilation_cache:
      compilation.use_cache(settings.compilation_cache)
    self.detector = detect.FaceDetector(settings.detector, num_threads=settings.num_threads)
    self.landmarker = landmarks.FaceMesh(settings.landmarks, num_threads=settings.num_threads)
    self.model = face3d.load_model(settings.face_model)
    self.model_hash = face3d.content_hash(self.model)
    self.model_hashes = (model_files.sha256_of(settings.detector), model_files.sha256_of(settings.landmarks))
    self.key = settings.prepared_key(self.model_hash)
    self.out = epath.Path(settings.out)

  def process(self, element):
    path, video_id = element
    start = time.perf_counter()
    status = {"path": path, "video_id": video_id}
    target = self.out / "prepared" / f"{prepared_name(video_id)}.npz"
    try:
      if not files.is_remote(path):
        clip_lib.check_input_file(path)
      reused = _reusable_status(target, self.key, path, self.settings.prep.max_frames)
      if reused is not None:
        status.update(reused, status="written", reused=True)
      else:
        status.update(self._prepare(path, video_id, target), status="written", reused=False)
    except clip_lib.SkippedVideo as skipped:
      status.update(status="skipped", reason=skipped.reason, problem=skipped.problem)
    except Exception as error:  # one odd video must not end a job over thousands; it is reported
      status.update(status="skipped", reason="error", problem=f"{type(error).__name__}: {error}")
    status["seconds"] = round(time.perf_counter() - start, 3)
    yield json.dumps(status)

  def _prepare(self, path: str, video_id: str, target: epath.Path) -> dict:
    settings = self.settings
    with _local_file(path) as local:
      identity = _remote_identity(path) if files.is_remote(path) else None
      track = clip_lib.cached_track(local, self.detector, self.landmarker, settings.prep,
                                    self.out / "tracks", self.model_hashes, identity)
      declared = video_lib.probe(local).num_frames
      fitted = clip_lib.fit_track(track, self.model, settings.prep)
      size = settings.prep.image_size
      jpegs = [records.encode_jpeg(image) for _, image in clip_lib.crop_frames(local, track, fitted.box, size)]
    if len(jpegs) != len(fitted.frames):
      raise clip_lib.SkippedVideo(path, "decode_error", f"the second decoding gave {len(jpegs)} frames, "
                                  f"the track has {len(fitted.frames)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fit = fitted.fit
    arrays = dict(
        key=np.str_(self.key), video_id=np.str_(video_id), source_path=np.str_(path),
        frames=fitted.frames, jpeg_bytes=np.frombuffer(b"".join(jpegs), np.uint8),
        jpeg_ends=np.cumsum([len(j) for j in jpegs]).astype(np.int64),
        id_coeffs=np.asarray(fit.id_coeffs, np.float32), exp_coeffs=np.asarray(fit.exp_coeffs, np.float32),
        cameras=np.asarray(fit.cameras, np.float32), residual=np.asarray(fit.residual, np.float32),
        landmarks=fitted.landmarks, crop_to_source=fitted.crop_to_source, interocular=fitted.interocular,
        frames_decoded=np.int64(track.frames_decoded), frames_declared=np.int64(declared),
        pose_jitter=np.asarray(fit_lib.pose_jitter(np.asarray(fit.cameras)), np.float32))
    clip_lib.write_npz_atomically(target, **arrays)
    # The statistics come from the arrays in memory; the side file carries them to later runs.
    status = _status_from(arrays, settings.prep.max_frames)
    _write_side_file(target, self.key, path, status)
    return dict(status, prepared=os.fspath(target))


def prepared_name(video_id: str) -> str:
  """A flat file name for a video id (folders flattened, then a short hash against collisions)."""
  flat = clip_lib.safe_file_name(video_id)[-80:]
  return f"{flat}-{hashlib.sha1(video_id.encode()).hexdigest()[:8]}"


def _load(target: epath.Path) -> dict:
  """Every array of a prepared video (its JPEG bytes too): the one read of the file in a run."""
  with np.load(io.BytesIO(target.read_bytes()), allow_pickle=False) as stored:
    return {key: stored[key] for key in stored.files}


# The per-video statistics (and what the file was made with) beside each prepared video, so that a
# later run knows them without reading the video's JPEG bytes again.
_SIDE_SUFFIX = ".json"
# The arrays a status is made of (all but the JPEG bytes and the per-frame records' fields).
_STATUS_ARRAYS = ("key", "source_path", "frames", "jpeg_ends", "residual", "interocular", "frames_decoded",
                  "frames_declared", "pose_jitter")


def _side_file(target: epath.Path) -> epath.Path:
  return target.with_name(target.name[:-len(".npz")] + _SIDE_SUFFIX)


def _status_from(stored: dict, max_frames: int) -> dict:
  """A written video's line of the summary, from its prepared arrays (no JPEG bytes needed)."""
  residual = np.asarray(stored["residual"])
  decoded = int(stored["frames_decoded"])
  status = {"frames": int(len(stored["frames"])), "frames_decoded": decoded,
            "mean_residual": float(np.mean(residual)),
            "mean_residual_interocular": float(np.mean(residual / stored["interocular"])),
            "pose_jitter_deg": [round(float(v), 4) for v in stored["pose_jitter"]],
            "image_bytes": int(stored["jpeg_ends"][-1]) if len(stored["jpeg_ends"]) else 0}
  # The container's own frame count (0 where it records none): decoding fewer frames than it
  # declares (and than --max_frames asked for) means the file ends early, typically a cut download.
  declared = int(stored["frames_declared"]) if "frames_declared" in stored else 0
  expected = min(declared, max_frames) if max_frames else declared
  if declared:
    status["frames_declared"] = declared
  status["truncated"] = decoded < expected
  if status["truncated"]:
    status["note"] = f"truncated: decoded {decoded} of the {declared} frames its container declares"
  return status


def _write_side_file(target: epath.Path, key: str, source_path: str, status: dict) -> None:
  """Written after the prepared file (atomically): its presence means the .npz is complete."""
  text = json.dumps({"key": key, "source_path": source_path, "npz_bytes": target.stat().length, "status": status})
  side = _side_file(target)
  if files.is_remote(side):
    side.write_text(text)
  else:
    files.write_text(side, text)


def _side_file_status(target: epath.Path, key: str, source_path: str) -> Optional[dict]:
  """The status in `target`'s side file if it describes `target` as prepared from `source_path` with
  settings `key`, else None (no side file, another key or source, a .npz of another size)."""
  side = _side_file(target)
  try:
    stored = json.loads(side.read_text())
    if (stored["key"], stored["source_path"]) != (key, source_path):
      return None
    if stored["npz_bytes"] != target.stat().length:
      return None  # not the file the side file describes
    return dict(stored["status"], prepared=os.fspath(target))
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _reusable_status(target: epath.Path, key: str, source_path: str, max_frames: int) -> Optional[dict]:
  """The status of `target` if it was prepared from `source_path` with settings `key`, else None.

  Read from its side file and the file's size, never from the .npz's JPEG bytes. A prepared file
  without a side file (one made before side files existed, or a job killed between the two
  writes) has its small arrays read instead, and its side file written.
  """
  if not target.exists():
    return None
  status = _side_file_status(target, key, source_path)
  if status is not None:
    return status
  try:
    with target.open("rb") as f, np.load(f, allow_pickle=False) as lazy:
      stored = {name: lazy[name] for name in _STATUS_ARRAYS if name in lazy.files}
    if (str(stored["key"]), str(stored["source_path"])) != (key, source_path):
      return None
    status = _status_from(stored, max_frames)
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    return None
  _write_side_file(target, key, source_path, status)
  return dict(status, prepared=os.fspath(target))


class _local_file:
  """The path itself for a local file; a temporary local copy of a remote one (PyAV reads local files)."""

  def __init__(self, path: str):
    self.path, self.copy = path, None

  def __enter__(self) -> str:
    if not files.is_remote(self.path):
      return self.path
    handle, self.copy = tempfile.mkstemp(suffix=os.path.splitext(self.path)[1])
    with os.fdopen(handle, "wb") as local, FileSystems.open(self.path) as remote:
      shutil.copyfileobj(remote, local)
    return self.copy

  def __exit__(self, *exc):
    if self.copy:
      os.remove(self.copy)


def prepared_examples(statuses: list[dict]):
  """The frame records of every written video, video by video (sorted ids), in frame order.

  What a shard's worker writes (`WriteShard`), and what `records.write_dataset` takes to assemble
  the same records in one process. Each prepared file is read once, whole.

  Raises:
    ValueError: a prepared file cannot be read (the message names it).
  """
  for status in sorted(statuses, key=lambda s: s["video_id"]):
    if status["status"] != "written":
      continue
    target = epath.Path(status["prepared"])
    try:
      stored = _load(target)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
      raise ValueError(f"{target}: this prepared video cannot be read ({type(error).__name__}: {error}); "
                       "delete it (and its .json) to prepare the video again") from error
    starts = np.concatenate([[0], stored["jpeg_ends"][:-1]])
    jpeg = stored["jpeg_bytes"].tobytes()
    for t, frame in enumerate(stored["frames"]):
      yield {
          "image": jpeg[starts[t]:stored["jpeg_ends"][t]],
          "id_coeffs": stored["id_coeffs"],
          "exp_coeffs": stored["exp_coeffs"][t],
          "camera": stored["cameras"][t],
          "landmarks": stored["landmarks"][t],
          "video_id": str(stored["video_id"]),
          "frame_index": int(frame),
          "crop_to_source": stored["crop_to_source"],
          "source_path": str(stored["source_path"]),
          "fit_residual": stored["residual"][t],
      }


def summarize(statuses: list[dict], seconds: float) -> dict:
  """The job's summary: counts, skip reasons, frames, fit quality, and each video's line."""
  written = [s for s in statuses if s["status"] == "written"]
  skipped: dict[str, int] = {}
  for s in statuses:
    if s["status"] == "skipped":
      skipped[s["reason"]] = skipped.get(s["reason"], 0) + 1
  frames = sum(s["frames"] for s in written)
  decoded = sum(s["frames_decoded"] for s in written)

  def frame_weighted(key):
    return float(sum(s[key] * s["frames"] for s in written) / frames) if frames else None

  return {
      "videos_in": len(statuses),
      "written": len(written),
      "skipped": dict(sorted(skipped.items())),
      "frames": frames,
      "mean_residual": frame_weighted("mean_residual"),
      "mean_residual_interocular": frame_weighted("mean_residual_interocular"),
      "fraction_fitted": frames / decoded if decoded else None,
      "truncated": sum(bool(s.get("truncated")) for s in written),
      "pose_jitter_deg": (np.mean([s["pose_jitter_deg"] for s in written], axis=0).round(4).tolist()
                          if written else None),
      "reused": sum(bool(s.get("reused")) for s in written),
      "seconds": round(seconds, 2),
      "frames_per_second": round(frames / seconds, 2) if seconds > 0 else None,
      "videos": sorted(statuses, key=lambda s: s["video_id"]),
  }


def local_runner(options: PipelineOptions):
  """The runner for `options`: Beam's FnApiRunner when none or the DirectRunner is named, else None
  (Beam resolves `--runner` itself).

  Beam's DirectRunner first tries its Prism runner, which downloads a Go binary from GitHub at run
  time (and leaves a temporary folder behind when it cannot); the FnApiRunner is what it falls back
  to, and takes the same `--direct_num_workers` and `--direct_running_mode`.
  """
  if _names_local_runner(options):
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    return FnApiRunner()
  return None


def _names_local_runner(options: PipelineOptions) -> bool:
  """Whether `local_runner` runs `options` (no runner named, or the DirectRunner)."""
  name = options.view_as(StandardOptions).runner
  return name is None or name in ("DirectRunner", "direct", "SwitchingDirectRunner")


# Bytes a record holds besides its JPEG (coefficients, landmarks, strings, the proto's framing): an
# estimate, used only to pick the number of shards and balance them.
_RECORD_OVERHEAD = 1024


def shard_plan(videos: list, num_shards: int = 0) -> dict:
  """Which videos each shard holds: contiguous runs of the sorted video ids, of about equal bytes.

  Args:
    videos: (video_id, image bytes, frames) of every written video, in any order.
    num_shards: the number of shards; 0 picks it from the size as TFDS does for its own builders
      (`ShardConfig.calculate_number_shards`: 64 MiB to 1 GiB each). Never more than the videos.

  Returns:
    {"count": the number of shards, "firsts": the first video id of each shard, ascending}: video
    v goes to the last shard whose first id is <= v (`shard_of`). Every shard holds a video.
  """
  if not videos:
    return {"count": 0, "firsts": []}
  videos = sorted(videos)
  sizes = np.array([image_bytes + frames * _RECORD_OVERHEAD for _, image_bytes, frames in videos], np.float64)
  if not num_shards:
    num_shards = tfds.core.utils.shard_utils.ShardConfig.calculate_number_shards(
        int(sizes.sum()), int(sum(frames for _, _, frames in videos)))
  count = max(1, min(int(num_shards), len(videos)))
  # Shard k starts at the first video whose bytes before it reach k / count of the total, and
  # at least one video after shard k - 1's start.
  before = np.concatenate([[0.0], np.cumsum(sizes)[:-1]])
  starts = [0]
  for k in range(1, count):
    start = max(int(np.searchsorted(before, k * sizes.sum() / count)), starts[-1] + 1)
    starts.append(min(start, len(videos) - (count - k)))
  return {"count": count, "firsts": [videos[i][0] for i in starts]}


def shard_of(video_id: str, plan: dict) -> int:
  """The shard of `plan` (`shard_plan`) that holds `video_id`."""
  return max(0, bisect.bisect_right(plan["firsts"], video_id) - 1)


def _shard_entry(status: dict):
  return status["video_id"], status.get("image_bytes", 0), status["frames"]


def _assign(status: dict, plan: dict):
  return shard_of(status["video_id"], plan), {"status": "written", "video_id": status["video_id"],
                                              "prepared": status["prepared"]}


class WriteShard(beam.DoFn):
  """One shard's videos -> one ArrayRecord file of the dataset, and what the metadata needs of it.

  The shard's prepared videos are read here, each once, in video-id order, and their records
  written video by video in frame order (`records.write_shard`: under a temporary name, renamed
  when complete, so a worker that dies mid-shard leaves no shard file; the runner's retry writes it
  again).
  """

  def __init__(self, dataset: DatasetSettings):
    self.dataset = dataset

  def process(self, element, plan):
    shard, videos = element
    dataset = self.dataset
    path = records.shard_path(dataset.directory, dataset.name, dataset.split, shard, plan["count"])
    stats = records.write_shard(path, prepared_examples(list(videos)), dict(dataset.metadata))
    yield json.dumps({"shard": shard, "count": plan["count"], "file": path.name, "records": stats.records,
                      "num_bytes": stats.num_bytes, "video_ids": stats.video_ids, "lengths": stats.lengths})


class WriteShards(beam.PTransform):
  """The written videos' statuses (dicts with video_id, prepared, frames, image_bytes) -> the
  dataset's shards in `dataset.directory`, and one JSON line per shard for `finish_dataset`.

  The plan (`shard_plan`) is made from every video's id and size, gathered on one worker: a few
  tens of bytes per video, never their frames.
  """

  def __init__(self, dataset: DatasetSettings):
    super().__init__()
    self.dataset = dataset

  def expand(self, written):
    plan = beam.pvalue.AsSingleton(
        written
        | "Sizes" >> beam.Map(_shard_entry)
        | "All sizes" >> beam.combiners.ToList()
        | "Plan" >> beam.Map(shard_plan, self.dataset.num_shards))
    return (written
            | "Assign" >> beam.Map(_assign, plan)
            | "By shard" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(WriteShard(self.dataset), plan))


def balanced_groups(costs: list[float], count: int) -> list[list[int]]:
  """Splits items of the given costs into at most `count` groups of about equal total cost: the
  largest first, each to the group with the least so far (Graham's LPT rule, whose largest group is
  at most 4/3 of the best split's).

  Returns:
    the groups, as lists of item indices in ascending order; no empty group.
  """
  if count < 1:
    raise ValueError(f"count must be >= 1, got {count}")
  groups = [[] for _ in range(min(count, len(costs)))]
  loads = [0.0] * len(groups)
  for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
    least = loads.index(min(loads))
    groups[least].append(item)
    loads[least] += costs[item]
  return [sorted(group) for group in groups]


def video_cost(path: str, max_frames: int) -> float:
  """The frames `path` will give (at most `max_frames`, 0: all), from its header: what a video's
  preparation time is proportional to. 0 for a file whose header cannot be read (the job reports
  it), 1 for one on an object store (not opened here)."""
  if files.is_remote(path):
    return 1.0
  try:
    info = video_lib.probe(path)
  except Exception:  # reported by the worker that prepares it
    return 0.0
  frames = info.num_frames or round(info.duration * info.fps)
  return float(min(frames, max_frames) if max_frames else frames)


def video_costs(inputs: list[str], ids: dict[str, str], settings: JobSettings) -> list[float]:
  """`video_cost` of each input, but 0 for one an earlier run prepared with the same settings and
  face model (`settings.model_hash`): its worker only reads the side file."""
  key = settings.prepared_key(settings.model_hash) if settings.model_hash else None
  prepared = epath.Path(settings.out) / "prepared"

  def cost(path: str) -> float:
    if key and _side_file_status(prepared / f"{prepared_name(ids[path])}.npz", key, path) is not None:
      return 0.0
    return video_cost(path, settings.prep.max_frames)

  return [cost(path) for path in inputs]


def local_workers(options: PipelineOptions) -> int:
  """The number of local workers the FnApiRunner (`local_runner`) spreads each stage over: 1 when
  another runner runs the job, or when the workers would not run in parallel (`in_memory`)."""
  if not _names_local_runner(options):
    return 1
  direct = options.view_as(DirectOptions)
  if direct.direct_running_mode not in ("multi_processing", "multi_threading"):
    return 1
  return direct.direct_num_workers or os.cpu_count() or 1


def _videos(pipeline, inputs: list[str], ids: dict[str, str], settings: JobSettings, workers: int):
  """The (path, video_id) elements the workers prepare.

  On another runner one element a video, spread at random (`Reshuffle`): the runner balances the
  work as it goes. Beam's local runner instead splits a stage's input into one fixed part per worker
  before it starts, as many elements each; with videos of unequal lengths one worker then often
  runs long after the other is idle (six shared clips of 175-448 frames on two workers: 12 s against
  7.5 s). So with several local workers the videos are first put into one group a worker, of about
  equal frames (`balanced_groups`, from each video's header; 0 for one an earlier run prepared with
  the same settings), one key each, so each worker receives one group whole.
  """
  elements = [(path, ids[path]) for path in inputs]
  if workers <= 1 or len(inputs) <= 1:
    return pipeline | "Videos" >> beam.Create(elements) | "Spread" >> beam.Reshuffle()
  groups = balanced_groups(video_costs(inputs, ids, settings), workers)
  return (pipeline
          | "Videos" >> beam.Create([(number, [elements[i] for i in group]) for number, group in enumerate(groups)])
          | "Spread" >> beam.GroupByKey()
          | "Ungroup" >> beam.FlatMap(lambda keyed: [video for videos in keyed[1] for video in videos]))


def run_pipeline(inputs: list[str], settings: JobSettings, beam_args: list[str]) -> tuple[list[dict], list[dict]]:
  """Runs the Beam pipeline over `inputs`.

  Each input is prepared (`PrepareVideo`); with `settings.dataset`, the written videos are then
  spread over shards (`shard_plan`) and each shard written by a worker (`WriteShard`) into
  `settings.dataset.directory`.

  The workers' status lines (and Beam's temporary files for them) go to a `.partial-*` folder in
  the output, which every worker can write; it is removed at the end, and a later run removes one
  that a killed run left (`files.remove_stale_partials`).

  Returns:
    (one status dict per input, one dict per shard written: shard, count, file, records,
    num_bytes, video_ids, lengths).
  """
  ids = video_ids(inputs)
  status_dir = epath.Path(settings.out) / files.partial_name("status")
  options = PipelineOptions(beam_args)
  try:
    if not files.is_remote(settings.out):
      status_dir.mkdir()
    with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
      statuses = (_videos(pipeline, inputs, ids, settings, local_workers(options))
                  | "Prepare" >> beam.ParDo(PrepareVideo(settings)))
      _ = statuses | "Write statuses" >> beam.io.WriteToText(os.fspath(status_dir / "status"), shard_name_template="")
      if settings.dataset is not None:
        written = (statuses
                   | "Parse" >> beam.Map(json.loads)
                   | "Written" >> beam.Filter(lambda status: status["status"] == "written"))
        _ = (written
             | "Shards" >> WriteShards(settings.dataset)
             | "Write shard lines" >> beam.io.WriteToText(os.fspath(status_dir / "shards"), shard_name_template=""))
    statuses = _read_lines(status_dir / "status")
    shards = _read_lines(status_dir / "shards") if settings.dataset is not None else []
    return statuses, shards
  finally:
    if status_dir.exists():
      status_dir.rmtree(missing_ok=True)


def _read_lines(path: epath.Path) -> list[dict]:
  if not path.exists():
    return []
  with path.open() as lines:
    return [json.loads(line) for line in lines if line.strip()]


def finish_dataset(dataset: DatasetSettings, shards: list[dict]) -> None:
  """The launching machine's part of the dataset, once the workers wrote the shards: checks that
  every shard is there, then writes dataset_info.json, features.json, metadata.json and the video
  index into `dataset.directory` from the shards' lines. Its work is proportional to the shards
  (a stat of each) and the videos (the index's ids and lengths), never to the frames: no record is
  read.

  Raises:
    RuntimeError: a shard is missing or reported twice.
  """
  directory = epath.Path(dataset.directory)
  shards = sorted(shards, key=lambda line: line["shard"])
  count = shards[0]["count"] if shards else 0
  if [line["shard"] for line in shards] != list(range(count)) or any(line["count"] != count for line in shards):
    raise RuntimeError(f"{directory}: the workers reported shards {[line['shard'] for line in shards]}, "
                       f"not each of 0..{count - 1} once")
  if not files.is_remote(dataset.directory):
    # A worker that died mid-shard left its temporary file; the shard itself was written again.
    for leftover in directory.glob(f"{files.PARTIAL_PREFIX}*"):
      leftover.unlink(missing_ok=True)
  with concurrent.futures.ThreadPoolExecutor(32) as pool:  # each a round trip on an object store
    found = list(pool.map(lambda line: (directory / line["file"]).exists(), shards))
  if not all(found):
    raise RuntimeError(f"{directory / shards[found.index(False)]['file']}: a shard the workers reported is missing")
  records.write_dataset_info(directory, dataset.name, dataset.split, dict(dataset.metadata),
                             [line["records"] for line in shards], sum(line["num_bytes"] for line in shards))
  _write_index(directory, dataset, shards)


def _write_index(directory: epath.Path, dataset: DatasetSettings, shards: list[dict]) -> None:
  records.write_video_index(directory, dataset.split, [directory / line["file"] for line in shards],
                            [v for line in shards for v in line["video_ids"]],
                            [n for line in shards for n in line["lengths"]])


def beam_option_parser() -> argparse.ArgumentParser:
  """The parser Beam reads its pipeline options with: every `PipelineOptions` subclass's flags."""
  captured = []
  PipelineOptions([]).get_all_options(add_extra_args_fn=captured.append)
  return captured[0]


def check_beam_args(beam_args: list[str]) -> None:
  """Refuses what is neither a flag of this command nor an Apache Beam pipeline option.

  Beam itself only logs a warning for an unknown flag and runs with its defaults, so a misspelt
  `--szie=64` would give a 256 px dataset.

  Raises:
    cli.UsageError: naming the unknown flags, or a Beam option's bad value.
  """
  parser = beam_option_parser()

  def refuse(message):
    raise cli.UsageError(message)

  parser.error = refuse
  _, unknown = parser.parse_known_args(beam_args)
  flags = [arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")]
  if flags:
    raise cli.UsageError(f"unknown flag {', '.join(flags)}: neither a flag of data_prep.build (see --help) nor an "
                         "Apache Beam pipeline option")
  if unknown:
    raise cli.UsageError(f"unexpected argument {unknown[0]!r}: flags take the form --name=value")


def add_video_flags(parser: argparse.ArgumentParser) -> None:
  """The flags of the input videos, the tracking pass and the MediaPipe model files (shared with
  `data_prep.learn_face_model`)."""
  defaults = clip_lib.PrepSettings()
  parser.add_argument("--input", required=True, help="glob of the videos, e.g. 'DIR/**/*.mp4' (quote it)")
  parser.add_argument("--detect_every", type=int, default=defaults.track.detect_every,
                      help="run the face detector every N frames, follow landmarks between (%(default)s)")
  parser.add_argument("--smooth", type=float, default=defaults.smooth,
                      help="landmark smoothing, Gaussian sigma in frames; 0 = off (%(default)s)")
  parser.add_argument("--smooth_motion", type=float, default=defaults.smooth_motion,
                      help="face speed (face sizes per frame) at which the smoothing halves; 0 = fixed (%(default)s)")
  parser.add_argument("--min_frames", type=int, default=defaults.min_frames,
                      help="skip videos whose face track is shorter (%(default)s)")
  parser.add_argument("--max_frames", type=int, default=defaults.max_frames,
                      help="read at most N frames per video; 0 = all (%(default)s)")
  parser.add_argument("--min_face_size", type=float, default=defaults.min_face_size,
                      help="skip videos whose face is smaller, source pixels (%(default)s)")
  parser.add_argument("--detector", help="face_detection_short_range.tflite (default: the fetched one)")
  parser.add_argument("--landmarks", help="face_landmark.tflite (default: the fetched one)")
  parser.add_argument("--landmarker_task", help="MediaPipe's face_landmarker.task bundle, instead of the two files")


def prep_settings(args: argparse.Namespace, **more) -> clip_lib.PrepSettings:
  """PrepSettings from the flags of `add_video_flags` (and `more` fields)."""
  return clip_lib.PrepSettings(smooth=args.smooth, smooth_motion=args.smooth_motion, min_frames=args.min_frames,
                               max_frames=args.max_frames, min_face_size=args.min_face_size,
                               track=track_lib.TrackConfig(detect_every=args.detect_every), **more)


def model_paths(args: argparse.Namespace) -> model_files.ModelPaths:
  return model_files.find_models(detector=args.detector, landmarks=args.landmarks, task=args.landmarker_task)


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
  """(this command's flags, the Apache Beam options); a bad command line exits with status 2 and a
  one-line message."""
  defaults = clip_lib.PrepSettings()
  # No abbreviations: a prefix of one of these flags must not take a Beam option's place.
  parser = cli.ArgumentParser(prog="python -m data_prep.build", description=__doc__.split("\n\n")[0],
                              epilog="Apache Beam's pipeline options pass through (--runner=..., ...); any "
                              "other flag is an error.", allow_abbrev=False)
  add_video_flags(parser)
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--face_model", required=True, help="a native .npz morphable model, or 'procedural:medium'")
  parser.add_argument("--name", default="videos", help="dataset name: OUT/NAME/1.0.0 (default %(default)s)")
  parser.add_argument("--size", type=int, default=defaults.image_size, help="crop side in pixels (%(default)s)")
  parser.add_argument("--crop_scale", type=float, default=defaults.crop_scale,
                      help="crop side over face size (%(default)s)")
  parser.add_argument("--num_threads", type=int, default=1, help="LiteRT threads per worker (%(default)s)")
  parser.add_argument("--compilation_cache", default=compilation.default_cache_folder(),
                      help="folder of JAX's persistent compilation cache for the workers' fits; '' = off "
                      "(default $JAX_COMPILATION_CACHE_DIR or ~/.cache/tfvgan_jax/jax_cache)")
  parser.add_argument("--num_shards", type=int, default=0,
                      help="ArrayRecord files of the dataset; 0 picks it from the size, 64 MiB to 1 GiB each (%(default)s)")
  args, beam_args = parser.parse_known_args(argv)
  try:
    check_beam_args(beam_args)
  except cli.UsageError as error:
    parser.error(str(error))
  return args, beam_args


def check_outputs(out: str, name: str) -> None:
  """Refuses, before any work, an --out or --name that cannot be written.

  Raises:
    files.OutputPathError, ValueError: naming the flag and the path.
  """
  try:
    records.check_name(name)
  except ValueError as error:
    raise ValueError(f"--name={name}: {error}") from error
  if not files.is_remote(out):
    files.check_output_dir(out, "--out")


def check_inputs_kept(out: str, name: str, inputs: list[str]) -> None:
  """Refuses an input that lies where the job writes (OUT/prepared, OUT/tracks, OUT/NAME, summary.json).

  Raises:
    files.OutputPathError: naming the input and the output.
  """
  if files.is_remote(out):
    return
  written = [os.path.realpath(os.path.join(out, part)) for part in ("prepared", "tracks", name, SUMMARY_FILE)]
  for path in inputs:
    real = os.path.realpath(path)
    for output in written:
      if real == output or real.startswith(output + os.sep):
        raise files.OutputPathError(f"--out={out}: the job writes {output}, which holds the input {path}; "
                                    "choose another --out (or --name)")


def main(argv=None) -> int:
  args, beam_args = parse_args(argv)
  return cli.run(lambda: _build(args, beam_args), args.debug)


def _build(args: argparse.Namespace, beam_args: list[str]) -> int:
  start = time.perf_counter()
  if args.min_frames < 2:
    raise ValueError(f"--min_frames must be >= 2 (training pairs frame t with t-1), got {args.min_frames}")
  if args.num_shards < 0:
    raise ValueError(f"--num_shards must be >= 0 (0: from the size), got {args.num_shards}")
  check_outputs(args.out, args.name)
  prep = prep_settings(args, image_size=args.size, crop_scale=args.crop_scale)
  paths = model_paths(args)
  model = face3d.load_model(args.face_model)
  inputs = find_inputs(args.input)
  if not inputs:
    raise ValueError(f"--input={args.input}: no file matches")
  face_model = [args.face_model] if os.path.exists(args.face_model) else []
  check_inputs_kept(args.out, args.name, [*inputs, *face_model, *paths])
  out = epath.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  if not files.is_remote(args.out):
    for folder in (out, out / "prepared", out / "tracks"):
      files.remove_stale_partials(folder)
  target = out / args.name / records.DATASET_VERSION
  # The workers write the shards into a staging folder beside the dataset; it is swapped in when
  # complete, so the earlier dataset stays in place until then, and summary.json (written after
  # the swap) always names a whole dataset.
  metadata = records.dataset_metadata(model, prep.image_size)
  with records.staged_dataset(target) as staging:
    dataset = DatasetSettings(directory=os.fspath(staging), name=args.name, metadata=tuple(metadata.items()),
                              num_shards=args.num_shards)
    settings = JobSettings(out=os.fspath(out), face_model=args.face_model, detector=os.fspath(paths.detector),
                           landmarks=os.fspath(paths.landmarks), prep=prep, num_threads=args.num_threads,
                           dataset=dataset, compilation_cache=args.compilation_cache,
                           model_hash=metadata["model_hash"])
    print(f"preparing {len(inputs)} videos into {out} ({model.name}, {prep.image_size} px)")
    statuses, shards = run_pipeline(inputs, settings, beam_args)
    pipeline_end = time.perf_counter()
    summary = summarize(statuses, pipeline_end - start)
    if summary["written"]:
      finish_dataset(dataset, shards)
      _swap_in(staging, target, dataset, shards)
      summary["dataset"] = os.fspath(target)
      summary["shards"] = len(shards)
  summary["seconds"] = round(time.perf_counter() - start, 2)
  # The launching machine's own time after the pipeline (the dataset's metadata and index, the
  # swap, the summary): proportional to the shards and the videos, not to the frames.
  summary["seconds_after_pipeline"] = round(time.perf_counter() - pipeline_end, 3)
  text = json.dumps(summary, indent=1)
  if files.is_remote(args.out):
    (out / SUMMARY_FILE).write_text(text)
  else:
    files.write_text(out / SUMMARY_FILE, text)
  _print_summary(summary, out / SUMMARY_FILE)
  return 0 if summary["written"] else 1


def _swap_in(staging: epath.Path, target: epath.Path, dataset: DatasetSettings, shards: list[dict]) -> None:
  """Puts the complete dataset in `staging` at `target`, replacing the earlier one.

  Locally two folder renames (`files.replace_dir`). Object stores have no folder rename
  (`records.move_into_store`: the earlier dataset removed, then each file moved with Beam's
  `FileSystems.rename`, a copy within the store), and the video index is written again from the
  shards' lines, since its fingerprint holds the files' times, which moving changed.
  """
  if not files.is_remote(target):
    files.replace_dir(staging, target)
    return
  records.move_into_store(staging, target, FileSystems.rename)
  _write_index(target, dataset, shards)


def _print_summary(summary: dict, path) -> None:
  for line in summary["videos"]:
    detail = (f"{line['frames']} frames, residual {line['mean_residual']:.2f} px" if line["status"] == "written"
              else f"{line['reason']}: {line['problem']}")
    if line.get("note"):
      detail += f" ({line['note']})"
    print(f"  {line['video_id']}: {line['status']}{' (reused)' if line.get('reused') else ''}, {detail}")
  brief = {k: v for k, v in summary.items() if k != "videos"}
  print(json.dumps(brief, indent=1))
  if not summary["written"]:
    print("error: no video could be used; see the reasons above", file=sys.stderr)
  print(f"summary saved to {path}")


if __name__ == "__main__":
  sys.exit(main())
