"""The launching machine's share of `data_prep.build`: the dataset assembled on it (before) against
shards written by the Beam workers and only the metadata written on it (now), on many small
synthetic prepared videos.

    python benchmarks/assembly_bench.py
    python benchmarks/assembly_bench.py --cases=2000x10:16,200x100:16 --size=32

Each case `VIDEOSxFRAMES:SHARDS` writes VIDEOS prepared videos of FRAMES frames (random
coefficients, SIZE px JPEGs: no detection or fit is run), then times

  before    `records.write_dataset` over `build.prepared_examples`: the records assembled on the
            launching machine, reading every prepared video (what the job did after its pipeline)
  workers   `build.WriteShards` in a Beam pipeline (FnApiRunner, --workers processes): the shards
  after     the launching machine's part once the pipeline has run: `build.finish_dataset`
            (a stat per shard, dataset_info.json, features.json, the video index), the swap into
            place and the summary (`build.summarize`)

`after` should grow with the shards and the videos, not with the frames.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np


def prepared_videos(folder: str, model, count: int, frames: int, size: int) -> list[dict]:
  """`count` prepared videos (as `build.PrepareVideo` writes them) and their status lines."""
  from etils import epath

  from data_prep import build
  from tfvgan_jax.data import records
  from tfvgan_jax.prep import clip
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:size, :size] / size
  jpeg = records.encode_jpeg(np.stack([120 * xx, 100 * yy, 90 + 80 * xx * yy], -1).astype(np.uint8))
  statuses = []
  for v in range(count):
    video_id = f"id{v // 20:05d}/clip{v:06d}"
    arrays = dict(
        key=np.str_("k"), video_id=np.str_(video_id), source_path=np.str_(f"/videos/{video_id}.mp4"),
        frames=np.arange(frames, dtype=np.int64), jpeg_bytes=np.frombuffer(jpeg * frames, np.uint8),
        jpeg_ends=np.arange(1, frames + 1, dtype=np.int64) * len(jpeg),
        id_coeffs=rng.standard_normal(model.num_id).astype(np.float32),
        exp_coeffs=rng.standard_normal((frames, model.num_exp)).astype(np.float32),
        cameras=rng.standard_normal((frames, 6)).astype(np.float32),
        residual=rng.uniform(0.1, 1, frames).astype(np.float32),
        landmarks=rng.uniform(0, size, (frames, 68, 2)).astype(np.float32),
        crop_to_source=np.eye(2, 3, dtype=np.float32), interocular=np.float32(size / 3),
        frames_decoded=np.int64(frames), frames_declared=np.int64(frames), pose_jitter=np.zeros(3, np.float32))
    target = epath.Path(folder) / f"{build.prepared_name(video_id)}.npz"
    clip.write_npz_atomically(target, **arrays)
    status = build._status_from(arrays, 0)
    statuses.append(dict(status, status="written", video_id=video_id, path=f"/videos/{video_id}.mp4",
                         prepared=os.fspath(target), reused=False, seconds=0.0))
  return statuses


def run_case(work: str, model, videos: int, frames: int, shards: int, size: int, workers: int) -> dict:
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
  from apache_beam.runners.portability.fn_api_runner import FnApiRunner

  from data_prep import build
  from tfvgan_jax import files
  from tfvgan_jax.data import records
  case = os.path.join(work, f"{videos}x{frames}_{shards}")
  statuses = prepared_videos(os.path.join(case, "prepared"), model, videos, frames, size)

  start = time.perf_counter()
  records.write_dataset(os.path.join(case, "before"), "videos", build.prepared_examples(statuses), model, size)
  before = time.perf_counter() - start

  target = os.path.join(case, "now", "videos", "1.0.0")
  staging = files.staging_dir(target)
  dataset = build.DatasetSettings(directory=staging, name="videos",
                                  metadata=tuple(records.dataset_metadata(model, size).items()), num_shards=shards)
  lines = os.path.join(case, "lines")
  options = ["--direct_num_workers=1"] if workers == 1 else [
      f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
  start = time.perf_counter()
  with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(options)) as pipeline:
    _ = (pipeline | beam.Create(statuses) | build.WriteShards(dataset)
         | beam.io.WriteToText(lines, shard_name_template=""))
  pipeline_s = time.perf_counter() - start

  start = time.perf_counter()
  with open(lines) as f:
    shard_lines = [json.loads(line) for line in f]
  build.finish_dataset(dataset, shard_lines)
  files.replace_dir(staging, target)
  summary = build.summarize(statuses, 1.0)
  files.write_text(os.path.join(case, "summary.json"), json.dumps(summary))
  after = time.perf_counter() - start
  assert len(records.open_dataset(target)) == videos * frames
  shutil.rmtree(case)
  return {"videos": videos, "frames_per_video": frames, "frames": videos * frames, "shards": len(shard_lines),
          "before_s": round(before, 3), "workers_s": round(pipeline_s, 3), "after_s": round(after, 4),
          "after_ms_per_shard": round(after / len(shard_lines) * 1e3, 3)}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="200x10:4,200x100:4,2000x10:4,2000x10:64,2000x10:512",
                      help="comma-separated VIDEOSxFRAMES:SHARDS")
  parser.add_argument("--size", type=int, default=32, help="crop side of the synthetic records")
  parser.add_argument("--workers", type=int, default=1, help="Beam worker processes for the shards")
  args = parser.parse_args()
  from tfvgan_jax import face3d
  model = face3d.procedural_model(detail="low")
  with tempfile.TemporaryDirectory(prefix="assembly_bench_") as work:
    for case in args.cases.split(","):
      shape, shards = case.split(":")
      videos, frames = (int(n) for n in shape.split("x"))
      print(json.dumps(run_case(work, model, videos, frames, int(shards), args.size, args.workers)), flush=True)


if __name__ == "__main__":
  main()
