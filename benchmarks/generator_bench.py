"""The generator's step with and without skip paths (`model.gen_skips`), E and G forward and backward.

    python benchmarks/generator_bench.py [--config=configs/synthetic.py] [--batch=16] [--repeats=3]

For each of `models.GEN_SKIPS` it builds the config's E and G with that value, compiles one step
(P = E(X_p, M), Y = G(R, P, M^, M), the gradient of mean(Y^2) with respect to both), and prints the
best of --repeats means over 5 steps, in ms, and the ratio to 'none' measured in the same run. The
inputs are random images at the config's size: the figure is the networks' cost only (no
rendering, no D, no losses).
"""

from __future__ import annotations

import argparse
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


def step_ms(model_config, skips: str, batch: int, repeats: int) -> float:
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from tfvgan_jax.models import build_models

  model_config = model_config.copy_and_resolve_references()
  model_config.gen_skips = skips
  models = build_models(model_config, nnx.Rngs(0))
  size = model_config.image_size
  keys = jax.random.split(jax.random.key(0), 3)
  render, appearance, hint = (jax.random.uniform(key, (batch, size, size, 3), minval=-1, maxval=1) for key in keys)
  mask = jnp.ones((batch, size, size, 1))

  @nnx.jit
  def step(generator, embedder):
    def loss(generator, embedder):
      return jnp.mean(generator(render, embedder(appearance, hint), mask, hint) ** 2)
    return nnx.grad(loss, argnums=(0, 1))(generator, embedder)

  jax.block_until_ready(step(models.generator, models.embedder))
  best = float("inf")
  for _ in range(repeats):
    started = time.perf_counter()
    for _ in range(5):
      grads = step(models.generator, models.embedder)
    jax.block_until_ready(grads)
    best = min(best, (time.perf_counter() - started) / 5)
  return best * 1e3


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/synthetic.py")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  import jax

  from tfvgan_jax.models import GEN_SKIPS
  model_config = load_config(args.config).model
  print(f"{args.config}: {model_config.image_size} px, batch {args.batch}, {jax.devices()[0].device_kind}")
  reference = None
  for skips in GEN_SKIPS:
    ms = step_ms(model_config, skips, args.batch, args.repeats)
    reference = reference or ms
    print(f"  gen_skips={skips!r:10} {ms:8.1f} ms   x{ms / reference:.2f} of 'none'", flush=True)


if __name__ == "__main__":
  main()
