"""Speed of the training step: step time, images/s, compile time, peak memory, FLOP rate.

    python benchmarks/train_bench.py                                # paper-sized networks, 64/128/256 px, batch 8
    python benchmarks/train_bench.py --config=configs/synthetic.py --sizes=64
    python benchmarks/train_bench.py --sizes=256 --batch=24         # on a GPU

The step is the real jitted `train.make_train_step` (rendering, E, G, D forward and backward,
both Adam updates) on a real batch of the synthetic corpus, placed on a mesh over all devices.
Alongside, the input pipeline's throughput at the same size is measured in the same run, so the
printed ratio says whether input keeps up with the step (it should be several times faster).

FLOPs come from XLA's cost analysis of the compiled step; utilization is reported against
--peak_tflops when given (e.g. 989 for an H100 SXM in bf16, 1979 with sparsity not counted).
Peak memory is the device's peak bytes in use where the backend reports it (GPU, TPU), else the
process's peak resident set size.
"""

from __future__ import annotations

import functools
import importlib.util
import resource
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from tfvgan_jax import face3d, inference, sharding, train
from tfvgan_jax.data import pipeline, synthetic

_CONFIG = flags.DEFINE_string("config", "configs/voxceleb.py", "config file whose networks are measured")
_SIZES = flags.DEFINE_list("sizes", ["64", "128", "256"], "image sizes")
_BATCH = flags.DEFINE_integer("batch", 8, "global batch size")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps per size (after one warm-up step)")
_FACE_MODEL = flags.DEFINE_string("face_model", "procedural:medium", "morphable model of the synthetic corpus")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "the device's peak TFLOP/s, for utilization")
_DATA = flags.DEFINE_string("data", None, "where corpora are cached (default: a temporary folder)")


def load_config(path: str, size: int):
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(f"res={size}")
  config.model.image_size = size
  config.data.batch_size = _BATCH.value
  config.data.num_workers = 0
  config.face_model = _FACE_MODEL.value
  return config


def peak_memory_bytes() -> tuple[int, str]:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"


def measure(size: int, data_dir: str) -> dict:
  config = load_config(_CONFIG.value, size)
  model = face3d.load_model(config.face_model)
  videos = synthetic.cached_corpus(data_dir, model, 16, 12, size, seed=0, log=lambda *_: None)
  config.data.videos = str(videos)
  dataset = pipeline.training_dataset(config.data, model)
  iterator = iter(dataset)
  mesh = sharding.create_mesh(config.mesh)
  batches = [sharding.global_batch(mesh, inference.step_batch(next(iterator))) for _ in range(2)]

  start = time.perf_counter()
  for _ in range(3 * _STEPS.value):
    next(iterator)
  input_rate = 3 * _STEPS.value * config.data.batch_size / (time.perf_counter() - start)

  networks = inference.abstract_networks(config.model)
  optimizers = train.make_optimizers(config.optim)
  init = functools.partial(train.init_state, config, optimizers)
  abstract = jax.eval_shape(init, jax.random.key(0))
  shardings = sharding.state_shardings(mesh, abstract)
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  face_model = jax.device_put(jax.tree.map(jnp.asarray, model), replicated)
  step = jax.jit(train.make_train_step(config, networks, mesh, optimizers), donate_argnums=0,
                 in_shardings=(shardings, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(sharding.BATCH_AXES)),
                               replicated),
                 out_shardings=(shardings, replicated))
  start = time.perf_counter()
  compiled = step.lower(state, batches[0], face_model).compile()
  compile_seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float((cost or {}).get("flops", 0.0))

  state, metrics = compiled(state, batches[0], face_model)
  jax.block_until_ready(metrics)
  times = []
  for i in range(_STEPS.value):
    start = time.perf_counter()
    state, metrics = compiled(state, batches[i % 2], face_model)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  memory, memory_kind = peak_memory_bytes()
  median = float(np.median(times))
  return {
      "size": size, "params": sum(x.size for x in jax.tree.leaves((abstract.params, abstract.disc_params))),
      "compile": compile_seconds, "median": median, "min": min(times),
      "images": config.data.batch_size / median, "input": input_rate, "memory": memory, "memory_kind": memory_kind,
      "tflops": flops / median / 1e12, "flops": flops,
  }


def main(argv):
  del argv
  device = jax.devices()[0]
  print(f"{jax.device_count()} x {device.device_kind} ({device.platform}); config {_CONFIG.value}; "
        f"batch {_BATCH.value}; {_STEPS.value} timed steps")
  header = (f"{'px':>5} {'params':>10} | {'step s':>7} {'(min)':>7} {'img/s':>7} | {'input img/s':>11} {'input/step':>10} | "
            f"{'compile s':>9} | {'GFLOP/step':>10} {'TFLOP/s':>8} {'MFU':>6} | peak memory")
  print(header)
  with tempfile.TemporaryDirectory() as temporary:
    for size in map(int, _SIZES.value):
      r = measure(size, _DATA.value or temporary)
      mfu = f"{100 * r['tflops'] / _PEAK.value:5.1f}%" if _PEAK.value else "    -"
      print(f"{r['size']:>5} {r['params']:>10,} | {r['median']:7.3f} {r['min']:7.3f} {r['images']:7.1f} | "
            f"{r['input']:11.1f} {r['input'] / r['images']:9.1f}x | {r['compile']:9.1f} | "
            f"{r['flops'] / 1e9:10.1f} {r['tflops']:8.3f} {mfu} | {r['memory'] / 2**30:.2f} GiB {r['memory_kind']}",
            flush=True)


if __name__ == "__main__":
  app.run(main)
