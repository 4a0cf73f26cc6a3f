"""Throughput of the training input pipeline (grain + DTSS + JPEG decoding), in samples/s.

    python benchmarks/input_bench.py                     # batch 8 and 32, 128 and 256 px, 0 and 2 workers
    python benchmarks/input_bench.py --sizes=128 --workers=0 --batches=8

A sample is six frames (identity, appearance, expression at t and t-k), so frames/s = 6 x
samples/s. Synthetic corpora are built once into --data (default a temporary folder). Worker
processes need absl.app.run, which this script uses.
"""

from __future__ import annotations

import tempfile
import time

import ml_collections
from absl import app, flags

from tfvgan_jax import face3d
from tfvgan_jax.data import pipeline, records, synthetic

_SIZES = flags.DEFINE_list("sizes", ["128", "256"], "crop sizes")
_BATCHES = flags.DEFINE_list("batches", ["8", "32"], "batch sizes")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "grain worker processes")
_SECONDS = flags.DEFINE_float("seconds", 5.0, "measuring time per configuration")
_DATA = flags.DEFINE_string("data", None, "where the corpora are built (default: a temporary folder)")


def corpus(data_dir, model, size):
  name = f"bench_{size}"
  try:
    return records.open_dataset(f"{data_dir}/{name}").path
  except (FileNotFoundError, records.DatasetError):
    start = time.perf_counter()
    path = records.write_dataset(data_dir, name, synthetic.corpus_examples(model, 32, 16, size, seed=0), model, size)
    print(f"built a 32 x 16-frame corpus at {size} px in {time.perf_counter() - start:.1f} s")
    return path


def main(argv):
  del argv
  model = face3d.procedural_model(detail="low")
  data_dir = _DATA.value or tempfile.mkdtemp(prefix="input_bench_")
  print(f"{'px':>4} {'batch':>5} {'workers':>7} | {'samples/s':>9} {'frames/s':>9} | first batch s")
  for size in map(int, _SIZES.value):
    path = corpus(data_dir, model, size)
    for batch in map(int, _BATCHES.value):
      for workers in map(int, _WORKERS.value):
        config = ml_collections.ConfigDict(dict(videos=str(path), images="", sampling="intra_inter", sigma=0.5,
                                                frame_gap=1, batch_size=batch, seed=0, num_workers=workers,
                                                num_threads=2, prefetch=2))
        start = time.perf_counter()
        iterator = iter(pipeline.training_dataset(config, model, process_index=0, process_count=1))
        next(iterator)
        first = time.perf_counter() - start
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < _SECONDS.value:
          next(iterator)
          count += batch
        rate = count / (time.perf_counter() - start)
        print(f"{size:>4} {batch:>5} {workers:>7} | {rate:9.0f} {6 * rate:9.0f} | {first:.2f}", flush=True)


if __name__ == "__main__":
  app.run(main)
