"""The video index at corpus scale: building it from shard metadata and loading it, time and memory.

    python benchmarks/index_bench.py                          # 10^8 frames in 10^6 videos
    python benchmarks/index_bench.py --frames=2e8 --videos=1.1e6 --old_frames=1e6,4e6

Shard metadata is simulated (no record is written): V videos with ids like VoxCeleb2's
(`id01234/AbCdEfGhIjK/00042`) and lengths drawn around frames / V, spread over shards in sorted-id
order as `data_prep.build` writes them. Measured, each in a fresh child process (so that peak
memory is its own):

  build   `records.write_video_index` from the shards' (video ids, lengths): the launching
          machine's share of the index
  load    what `records.load_video_index` does once the fingerprint matches: read the .npz, make
          the VideoIndex; then `sampling.FrameIndex(*index)` and 10^5 record look-ups
  pickle  the FrameIndex as the input pipeline hands it to each grain worker process (the
          per-host memory is about (1 + data.num_workers) times the in-memory size)
  old     the earlier layout (every record's video id and frame index, a dict of per-video
          record arrays, FrameIndex.records) at --old_frames, for comparison; it grows linearly
          in frames (extrapolate to --frames)

Peak memory is the child's peak resident set size (ru_maxrss) minus its resident size after the
imports, so it is what the step itself needed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import resource
import string
import tempfile
import time


def rss_mb() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_videos(num_videos: int, num_frames: int, seed: int = 0):
  """(ids in sorted order, lengths summing to num_frames)."""
  import numpy as np
  rng = np.random.default_rng(seed)
  letters = np.array(list(string.ascii_letters + string.digits))
  people = max(1, num_videos // 180)
  person = np.sort(rng.integers(0, people, num_videos))
  codes = ["".join(c) for c in letters[rng.integers(0, len(letters), (num_videos, 11))]]
  ids = sorted(f"id{p:05d}/{c}/{i % 1000:05d}" for i, (p, c) in enumerate(zip(person, codes)))
  weights = rng.gamma(2.0, 1.0, num_videos)
  lengths = np.maximum(1, np.floor(weights / weights.sum() * num_frames)).astype(np.int64)
  lengths[: num_frames - int(lengths.sum())] += 1 if num_frames > lengths.sum() else 0
  return ids, lengths


def _build(args, folder, queue):
  import numpy as np
  from etils import epath
  from tfvgan_jax.data import records
  ids, lengths = synthetic_videos(args["videos"], args["frames"])
  shard = epath.Path(folder) / "shard"
  shard.write_bytes(b"")
  shards = [shard] * args["shards"]  # the fingerprint stats each shard file
  base = rss_mb()
  start = time.perf_counter()
  index = records.write_video_index(folder, "train", shards, ids, lengths)
  seconds = time.perf_counter() - start
  size = os.path.getsize(os.path.join(folder, "video_index-train.npz"))
  queue.put({"step": "build", "seconds": seconds, "peak_mb": peak_mb() - base, "file_mb": size / 2**20,
             "videos": len(index.video_ids), "frames": int(np.sum(lengths))})


def _load(args, folder, queue):
  import numpy as np
  from tfvgan_jax.data import records, sampling
  base = rss_mb()
  start = time.perf_counter()
  with open(os.path.join(folder, "video_index-train.npz"), "rb") as f, np.load(f, allow_pickle=False) as stored:
    index = records._index_from_arrays(stored)
  frame_index = sampling.FrameIndex(*index)
  seconds = time.perf_counter() - start
  held = rss_mb() - base
  rng = np.random.default_rng(0)
  videos = rng.integers(0, len(frame_index.lengths), 100_000)
  start = time.perf_counter()
  for v in videos:
    frame_index.record(int(v), int(frame_index.lengths[v]) - 1)
  lookup = (time.perf_counter() - start) / len(videos)
  pickled = len(pickle.dumps(frame_index))
  queue.put({"step": "load", "seconds": seconds, "peak_mb": peak_mb() - base, "held_mb": held,
             "lookup_us": lookup * 1e6, "pickled_mb": pickled / 2**20})


def _old(args, folder, queue):
  """The earlier layout, as `records._index_fields` and `video_index` built and held it."""
  import numpy as np
  from tfvgan_jax.data import sampling
  ids, lengths = synthetic_videos(args["videos"], args["frames"])
  per_record = np.repeat(np.array(ids, dtype=np.str_), lengths)
  frames = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
  order = np.random.default_rng(0).permutation(len(frames))  # TFDS's shuffled record order
  per_record, frames = per_record[order], frames[order]
  del ids, order
  path = os.path.join(folder, "old_index.npz")
  np.savez(path, fingerprint=np.str_("x"), video_id=per_record, frame_index=frames)
  del per_record, frames
  base = rss_mb()
  start = time.perf_counter()
  with np.load(path) as stored:
    video_ids, frames = stored["video_id"], stored["frame_index"]
  order = np.lexsort((frames, video_ids))
  video_ids, frames = video_ids[order], frames[order]
  starts = np.flatnonzero(np.concatenate([[True], video_ids[1:] != video_ids[:-1]]))
  groups = np.split(order.astype(np.int64), starts[1:])
  videos = {str(video_ids[start]): group for start, group in zip(starts, groups)}
  frame_index = sampling.FrameIndex.from_videos(videos)
  seconds = time.perf_counter() - start
  pickled = len(pickle.dumps(frame_index))
  queue.put({"step": "old", "seconds": seconds, "peak_mb": peak_mb() - base, "file_mb": os.path.getsize(path) / 2**20,
             "pickled_mb": pickled / 2**20, "frames": int(len(order))})


def in_child(target, args, folder):
  context = multiprocessing.get_context("spawn")
  queue = context.Queue()
  child = context.Process(target=target, args=(args, folder, queue))
  child.start()
  result = queue.get()
  child.join()
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", type=float, default=1e8)
  parser.add_argument("--videos", type=float, default=1e6)
  parser.add_argument("--shards", type=int, default=1024)
  parser.add_argument("--old_frames", default="1e6,4e6", help="frames for the earlier layout ('' skips it)")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(prefix="index_bench_") as folder:
    setting = {"frames": int(args.frames), "videos": int(args.videos), "shards": args.shards}
    print(json.dumps(setting))
    for target in (_build, _load):
      print(json.dumps({key: round(value, 3) if isinstance(value, float) else value
                        for key, value in in_child(target, setting, folder).items()}))
    for frames in filter(None, args.old_frames.split(",")):
      frames = int(float(frames))
      old = {"frames": frames, "videos": max(1, int(args.videos * frames / args.frames)), "shards": 1}
      result = in_child(_old, old, folder)
      print(json.dumps({key: round(value, 3) if isinstance(value, float) else value for key, value in result.items()}))


if __name__ == "__main__":
  main()
