"""E and G's step as one model field varies: skip paths, normalization, dtype, widths.

    python benchmarks/generator_bench.py [--config=configs/synthetic.py] [--batch=16] [--repeats=3]
    python benchmarks/generator_bench.py --config=configs/voxceleb.py --size=256 --batch=24 \
        --vary=norm=rcn,spade,adain,instance --dtype=bfloat16      # what the normalization costs

For each value of --vary (FIELD=V1,V2,...: a field of the config's `model`; default every
`models.GEN_SKIPS`) it builds the config's E and G with that value, compiles one step
(P = E(X_p, M), Y = G(R, P, M^, M), the gradient of mean(Y^2) with respect to both), and prints the
best of --repeats means over 5 steps, in ms, the ratio to the first value measured in the same run,
and the step's TFLOP/s (FLOPs from XLA's cost analysis of the program lowered for a CPU). The
inputs are random images at the config's size: the figure is the networks' cost only (no
rendering, no D, no losses).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import pathlib
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(path: str):
  spec = importlib.util.spec_from_file_location("bench_config", ROOT / path if not pathlib.Path(path).is_absolute()
                                                else path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def parse_vary(text: str) -> tuple[str, list]:
  """'FIELD=V1,V2' -> (FIELD, [V1, V2]); numbers and booleans are read as such, the rest as strings."""
  field, sep, values = text.partition("=")
  if not sep or not field or not values:
    raise SystemExit(f"--vary={text!r}: expected FIELD=V1,V2,... (a field of the config's model)")

  def value(v: str):
    try:
      return ast.literal_eval(v)
    except (ValueError, SyntaxError):
      return v
  return field, [value(v) for v in values.split(",")]


def objective(generator, embedder, render, appearance, hint, mask):
  """mean(Y^2) of Y = G(R, E(X_p, M), M^, M): the step's E and G forward, whose gradient is timed."""
  return (generator(render, embedder(appearance, hint), mask, hint) ** 2).mean()


def step_ms(model_config, field: str, value, batch: int, repeats: int) -> tuple[float, float]:
  """(best mean ms of the step, its FLOPs)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from tfvgan_jax.models import build_models

  model_config = model_config.copy_and_resolve_references()
  if field not in model_config:
    raise SystemExit(f"--vary: the config's model has no field {field!r}")
  model_config[field] = value
  models = build_models(model_config, nnx.Rngs(0))
  size = model_config.image_size
  keys = jax.random.split(jax.random.key(0), 3)
  render, appearance, hint = (jax.random.uniform(key, (batch, size, size, 3), minval=-1, maxval=1) for key in keys)
  mask = jnp.ones((batch, size, size, 1))

  @nnx.jit
  def step(generator, embedder):
    def loss(generator, embedder):
      return objective(generator, embedder, render, appearance, hint, mask)
    return nnx.grad(loss, argnums=(0, 1))(generator, embedder)

  jax.block_until_ready(step(models.generator, models.embedder))
  flops = flops_on_cpu(model_config, batch)
  best = float("inf")
  for _ in range(repeats):
    started = time.perf_counter()
    for _ in range(5):
      grads = step(models.generator, models.embedder)
    jax.block_until_ready(grads)
    best = min(best, (time.perf_counter() - started) / 5)
  return best * 1e3, flops


def flops_on_cpu(model_config, batch: int) -> float:
  """FLOPs of the same step built and lowered on one CPU device (the GPU backend's analysis misses
  the convolutions it hands to cuDNN)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from tfvgan_jax.models import build_models

  size = model_config.image_size
  with jax.default_device(jax.devices("cpu")[0]):
    models = nnx.eval_shape(lambda: build_models(model_config, nnx.Rngs(0)))
    generator, embedder = models.generator, models.embedder
    image = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    mask = jax.ShapeDtypeStruct((batch, size, size, 1), jnp.float32)
    graph_g, state_g = nnx.split(generator)
    graph_e, state_e = nnx.split(embedder)

    def step(state_g, state_e, render, appearance, hint, mask):
      def loss(state_g, state_e):
        return objective(nnx.merge(graph_g, state_g), nnx.merge(graph_e, state_e), render, appearance, hint, mask)
      return jax.grad(loss, argnums=(0, 1))(state_g, state_e)

    cost = jax.jit(step).trace(state_g, state_e, image, image, image, mask).lower(
        lowering_platforms=("cpu",)).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/synthetic.py")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--vary", default=None, help="FIELD=V1,V2,...: a field of the config's model and its values "
                      "(default: gen_skips, every value)")
  parser.add_argument("--size", type=int, default=0, help="image size (default: the config's)")
  parser.add_argument("--dtype", default=None, help="model.dtype for every value (default: the config's)")
  args = parser.parse_args()
  import jax

  from tfvgan_jax.models import GEN_SKIPS
  field, values = parse_vary(args.vary) if args.vary else ("gen_skips", list(GEN_SKIPS))
  model_config = load_config(args.config).model
  if args.size:
    model_config.image_size = args.size
  if args.dtype:
    model_config.dtype = args.dtype
  print(f"{args.config}: {model_config.image_size} px, batch {args.batch}, dtype {model_config.get('dtype', 'float32')}, "
        f"{jax.devices()[0].device_kind}")
  reference = None
  for value in values:
    ms, flops = step_ms(model_config, field, value, args.batch, args.repeats)
    reference = reference or ms
    print(f"  {field}={value!r:12} {ms:8.1f} ms   x{ms / reference:.2f} of {values[0]!r}   "
          f"{flops / 1e9:8.1f} GFLOP  {flops / ms / 1e9:7.3f} TFLOP/s", flush=True)


if __name__ == "__main__":
  main()
