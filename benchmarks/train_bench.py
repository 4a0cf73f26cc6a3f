"""Speed of the training step, part by part: scene, E/G/D forward and backward, optimizer update.

    python benchmarks/train_bench.py                                # paper-sized networks, 128 px, batch 8
    python benchmarks/train_bench.py --sizes=128,256 --batch=24 --dtypes=float32,bfloat16 --peak_tflops=989
    python benchmarks/train_bench.py --config=configs/synthetic.py --sizes=64
    python benchmarks/train_bench.py --config=configs/synthetic.py --sizes=64 --relight   # R re-shaded
    python benchmarks/train_bench.py --sizes=256 --batch=24 --flops_only   # FLOPs for a device timed elsewhere

The step is the real jitted `train.make_train_step` (rendering, E, G, D forward and backward,
both Adam updates) on a real batch of the synthetic corpus, placed on a mesh over all devices.
Its parts are jitted apart on the same batch and state, each timed alone (interleaved repetitions,
medians):

  scene      `train.sharded_scene`: recombined meshes, rasterization, R (re-shaded with --relight), M^, M, dense flow
  G+E fwd    P = E(X_p, M), Y = G(R, P, M^)
  G+E f+b    the G+E objective (E, G, D on Y, the losses) and its gradient
  D f+b      D's objective on real and fake and its gradient
  update     both Adam updates (and the EMA) from given gradients

The parts overlap (G+E f+b contains G+E fwd) and the whole step fuses across them, so they need
not add up to the step. Alongside, the input pipeline's throughput at the same size is measured
in the same run, with the config's worker processes (--input_workers changes them), before the
step is timed (input/step: how many times faster input is than the step consumes it).

Utilization is that of the networks: the FLOPs of G+E f+b, D f+b and the update over the step's
time less the scene's (the whole step's with --noparts), against --peak_tflops when given (e.g.
989 for an H100 SXM or H200 in bf16 dense). FLOPs come from XLA's cost analysis of each program
lowered for one CPU device on abstract arguments, whatever the backend: the count does not depend
on where the program runs, and the GPU backend's own analysis gives none for a lowered program and
misses the convolutions of a compiled one (they become cuDNN calls: it counted 293 GFLOP for a
256 px, batch 24 step of about 20 TFLOP). --flops_only prints the counts without timing anything.
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
import optax
from absl import app, flags

from tfvgan_jax import face3d, inference, sharding, train
from tfvgan_jax.data import pipeline, synthetic

_CONFIG = flags.DEFINE_string("config", "configs/voxceleb.py", "config file whose networks are measured")
_SIZES = flags.DEFINE_list("sizes", ["128"], "image sizes")
_BATCH = flags.DEFINE_integer("batch", 8, "global batch size")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "model.dtype values to measure")
_STEPS = flags.DEFINE_integer("steps", 3, "timed repetitions of each program (after one warm-up call)")
_FACE_MODEL = flags.DEFINE_string("face_model", "procedural:high", "morphable model of the synthetic corpus")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "the device's peak TFLOP/s, for utilization")
_DATA = flags.DEFINE_string("data", None, "where corpora are cached (default: a temporary folder)")
_PARTS = flags.DEFINE_bool("parts", True, "also time the step's parts (each is compiled apart)")
_RELIGHT = flags.DEFINE_bool("relight", None, "config.render.relight for the measured step (default: the config's)")
_INPUT_WORKERS = flags.DEFINE_integer("input_workers", -1, "grain worker processes of the input pipeline "
                                      "(-1: the config's data.num_workers, as training runs it)")
_FLOPS_ONLY = flags.DEFINE_bool("flops_only", False, "only count each program's FLOPs (lowered for CPU, nothing "
                                "compiled or run): the figures for utilization on a device measured elsewhere")

PARTS = ("scene", "G+E fwd", "G+E f+b", "D f+b", "update")
NETWORK_PARTS = ("G+E f+b", "D f+b", "update")  # the networks' work in one step (G+E f+b holds D on Y)


def load_config(path: str, size: int, dtype: str):
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(f"res={size}")
  config.model.image_size = size
  config.model.dtype = dtype
  config.data.batch_size = _BATCH.value
  if _INPUT_WORKERS.value >= 0:
    config.data.num_workers = _INPUT_WORKERS.value
  config.face_model = _FACE_MODEL.value
  if _RELIGHT.value is not None:
    config.render.relight = _RELIGHT.value
  return config


def peak_memory_bytes() -> tuple[int, str]:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"


def flops_of(lowered) -> float:
  """FLOPs of a lowered program (`jax.stages.Lowered`), counted before backend-specific rewrites."""
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def part_functions(config, networks, mesh, optimizers):
  """The parts of the step as functions of (state, batch, face_model, scene, grads)."""
  tolerance = float(config.render.tolerance)
  conditional = bool(config.model.disc_conditional)

  def scene(state, batch, face_model, scene, grads):
    return train.sharded_scene(mesh, face_model, batch, tolerance, relight=bool(config.render.get("relight", False)))

  def blend(state, batch, face_model, scene, grads):
    return inference.blend_scene(networks, state.params, state.variables, scene, train=True)[0]

  def generator(state, batch, face_model, scene, grads):
    return jax.value_and_grad(train.generator_objective, has_aux=True)(
        state.params, state, networks, scene, config.loss, conditional)[1]

  def discriminator(state, batch, face_model, scene, grads):
    condition = scene.identity if conditional else None
    fake = scene.render  # stands in for Y: the same shape, and D's cost does not depend on the values
    return jax.value_and_grad(train.discriminator_objective, has_aux=True)(
        state.disc_params, state.variables["discriminator"], networks, scene.appearance, fake, condition,
        config.loss.adversarial)[1]

  def update(state, batch, face_model, scene, grads):
    gen_grads, disc_grads = grads
    updates, gen_opt = optimizers.generator.update(gen_grads, state.gen_opt, state.params)
    params = optax.apply_updates(state.params, updates)
    updates, disc_opt = optimizers.discriminator.update(disc_grads, state.disc_opt, state.disc_params)
    disc_params = optax.apply_updates(state.disc_params, updates)
    ema, decay = state.ema, float(config.optim.ema_decay)
    if decay:
      ema = jax.tree.map(lambda average, new: decay * average + (1.0 - decay) * new, state.ema, params)
    return params, disc_params, gen_opt, disc_opt, ema

  return dict(zip(PARTS, (scene, blend, generator, discriminator, update)))


def timed(fns: dict, args: dict, steps: int) -> dict:
  """Median seconds of each function, repetitions interleaved across functions."""
  for name, fn in fns.items():
    jax.block_until_ready(fn(*args[name]))
  times = {name: [] for name in fns}
  for _ in range(steps):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args[name]))
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def network_flops(config, networks, optimizers, state, batch, face_model) -> dict:
  """FLOPs of the step's parts but the scene, lowered (not compiled) for one CPU device.

  Only the shapes and dtypes of state, batch and face_model are read (arrays on any backend, or
  `jax.eval_shape` results). The scene is left out: its count sums both branches of the
  rasterizer's overflow `cond` (the rarely taken one redraws with a loop) and the integer and
  comparison work of rasterization, so it says nothing about the work done (26.5 TFLOP counted for a
  256 px, batch 24 scene that runs in 6 ms on an H200).
  """
  mesh = jax.make_mesh((1, 1), sharding.BATCH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2,
                       devices=jax.devices("cpu")[:1])
  whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=whole), tree)

  parts = part_functions(config, networks, mesh, optimizers)
  state, batch, face_model = abstract((state, batch, face_model))
  scene = jax.eval_shape(parts["scene"], state, batch, face_model, None, None)
  grads = (jax.eval_shape(parts["G+E f+b"], state, batch, face_model, scene, None),
           jax.eval_shape(parts["D f+b"], state, batch, face_model, scene, None))
  args = abstract((state, batch, face_model, scene, grads))
  return {name: flops_of(jax.jit(fn).lower(*args)) for name, fn in parts.items() if name != "scene"}


def corpus_config(size: int, dtype: str, data_dir: str):
  """(config, face model) of one row: the config at this size and dtype, reading the cached corpus."""
  config = load_config(_CONFIG.value, size, dtype)
  model = face3d.load_model(config.face_model)
  videos = synthetic.cached_corpus(data_dir, model, 16, 12, size, seed=0, log=lambda *_: None)
  config.data.videos = str(videos)
  return config, model


def count_flops(size: int, dtype: str, data_dir: str) -> dict:
  """`network_flops` at this size and dtype from abstract state (nothing allocated, nothing run)."""
  config, model = corpus_config(size, dtype, data_dir)
  config.data.num_workers = 0  # one batch's shapes are all it reads
  batch = inference.step_batch(next(iter(pipeline.training_dataset(config.data, model))))
  optimizers = train.make_optimizers(config.optim)
  state = jax.eval_shape(functools.partial(train.init_state, config, optimizers), jax.random.key(0))
  return network_flops(config, inference.abstract_networks(config.model), optimizers, state, batch,
                       jax.tree.map(jnp.asarray, model))


def measure(size: int, dtype: str, data_dir: str) -> dict:
  config, model = corpus_config(size, dtype, data_dir)
  iterator = iter(pipeline.training_dataset(config.data, model))
  mesh = sharding.create_mesh(config.mesh)
  batch = sharding.global_batch(mesh, inference.step_batch(next(iterator)))
  for _ in range(int(config.data.num_workers)):  # every worker started and delivering
    next(iterator)
  start = time.perf_counter()
  for _ in range(3 * _STEPS.value):
    next(iterator)
  input_rate = 3 * _STEPS.value * config.data.batch_size / (time.perf_counter() - start)
  del iterator  # its workers stop: the step is timed without them on the CPU

  networks = inference.abstract_networks(config.model)
  optimizers = train.make_optimizers(config.optim)
  init = functools.partial(train.init_state, config, optimizers)
  abstract = jax.eval_shape(init, jax.random.key(0))
  shardings = sharding.state_shardings(mesh, abstract)
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(sharding.BATCH_AXES))
  face_model = jax.device_put(jax.tree.map(jnp.asarray, model), replicated)

  # The whole step (not donated: the parts below read the same state).
  step = jax.jit(train.make_train_step(config, networks, mesh, optimizers),
                 in_shardings=(shardings, batch_sharding, replicated), out_shardings=(shardings, replicated))
  start = time.perf_counter()
  compiled = {"step": step.lower(state, batch, face_model).compile()}
  compile_seconds = {"step": time.perf_counter() - start}

  parts = part_functions(config, networks, mesh, optimizers) if _PARTS.value else {}
  flops = network_flops(config, networks, optimizers, state, batch, face_model)
  if not parts:
    seconds = timed(compiled, {"step": (state, batch, face_model)}, _STEPS.value)
    memory, memory_kind = peak_memory_bytes()
    return {"size": size, "dtype": dtype, "seconds": seconds, "compile": compile_seconds, "flops": flops,
            "input": input_rate, "images": config.data.batch_size / seconds["step"], "memory": memory,
            "memory_kind": memory_kind}
  scene = jax.jit(parts["scene"])(state, batch, face_model, None, None)
  gen_grads = jax.jit(parts["G+E f+b"])(state, batch, face_model, scene, None)
  disc_grads = jax.jit(parts["D f+b"])(state, batch, face_model, scene, None)
  grads = (gen_grads, disc_grads)
  part_args = (state, batch, face_model, scene, grads)
  for name, fn in parts.items():
    start = time.perf_counter()
    compiled[name] = jax.jit(fn).lower(*part_args).compile()
    compile_seconds[name] = time.perf_counter() - start
  args = {name: part_args for name in parts}
  args["step"] = (state, batch, face_model)
  seconds = timed(compiled, args, _STEPS.value)
  memory, memory_kind = peak_memory_bytes()
  return {"size": size, "dtype": dtype, "seconds": seconds, "compile": compile_seconds, "flops": flops,
          "input": input_rate, "images": config.data.batch_size / seconds["step"], "memory": memory,
          "memory_kind": memory_kind}


def network_utilization(flops: dict, seconds: dict) -> tuple[float, float]:
  """(GFLOP, TFLOP/s) of the networks' share of one step: G+E f+b, D f+b and the update.

  The time is the step's less the scene's when the parts were timed (the networks' share of the
  step), else the whole step's (a lower bound on the rate).
  """
  gflop = sum(flops[c] for c in NETWORK_PARTS) / 1e9
  busy = seconds["step"] - seconds.get("scene", 0.0)
  return gflop, gflop / max(busy, 1e-9) / 1e3


def main(argv):
  del argv
  device = jax.devices()[0]
  print(f"{jax.device_count()} x {device.device_kind} ({device.platform}); config {_CONFIG.value}; "
        f"batch {_BATCH.value}; face model {_FACE_MODEL.value}; medians of {_STEPS.value} interleaved repetitions")
  columns = ("step",) + PARTS
  with tempfile.TemporaryDirectory() as temporary:
    if _FLOPS_ONLY.value:
      for size in map(int, _SIZES.value):
        for dtype in _DTYPES.value:
          flops = count_flops(size, dtype, _DATA.value or temporary)
          print(f"{size:>4} {dtype:>8} | GFLOP " + ", ".join(f"{c} {flops[c] / 1e9:.1f}" for c in flops)
                + f"; networks {sum(flops[c] for c in NETWORK_PARTS) / 1e9:.1f}", flush=True)
      return
    print(f"{'px':>4} {'dtype':>8} | " + " ".join(f"{c:>9}" for c in columns) + " | scene % | img/s  input/step | "
          "compile s | net GFLOP TFLOP/s  MFU | peak memory")
    for size in map(int, _SIZES.value):
      for dtype in _DTYPES.value:
        r = measure(size, dtype, _DATA.value or temporary)
        s, flops = r["seconds"], r["flops"]
        gflop, tflops = network_utilization(flops, s)
        mfu = f"{100 * tflops / _PEAK.value:4.1f}%" if _PEAK.value else "   -"
        timings = " ".join(f"{1e3 * s[c]:7.1f}ms" if c in s else f"{'-':>9}" for c in columns)
        share = f"{100 * s['scene'] / s['step']:6.1f}%" if "scene" in s else f"{'-':>7}"
        print(f"{size:>4} {dtype:>8} | {timings} | {share} | {r['images']:5.1f} {r['input'] / r['images']:9.1f}x | "
              f"{r['compile']['step']:9.1f} | {gflop:9.1f} {tflops:7.3f} {mfu} | "
              f"{r['memory'] / 2**30:.2f} GiB {r['memory_kind']}", flush=True)
        line = "      GFLOP per part: " + ", ".join(f"{c} {flops[c] / 1e9:.1f}" for c in flops)
        if "scene" in s:
          line += "; compile s per part: " + ", ".join(f"{c} {r['compile'][c]:.0f}" for c in PARTS)
        print(line, flush=True)


if __name__ == "__main__":
  app.run(main)
