"""Speed of the geometry engine: rasterize, render (R, M^) and dense flow, in ms per frame.

    python benchmarks/render_bench.py                      # the full table (a few minutes on 2 cores)
    python benchmarks/render_bench.py --sizes=256 --batches=1 --details=low,high

Meshes are the procedural face ('low' ~1k and 'high' ~75k triangles) filling the crop as in
training, turned a little. Times are ms per frame, the median of --reps runs with the minimum in
brackets (a shared 2-core machine is noisy); compile time is reported apart. "render" is R and M^
for one sample: two rasterizations (target and identity frame) and the texture transfer. "flow"
is dense_flow on given fragments. The brute-force NumPy rasterizer of the tests is timed on one frame per size for the
speed ratio. Inside jit the extra-chunk capacity is a static argument: it is sized here the way a
caller would, from `render.chunks_needed` on representative data.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from tfvgan_jax import face3d, render

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from brute_force import rasterize_reference  # noqa: E402


def posed_meshes(model, size, batch, seed=0):
  """[batch, N, 3] screen vertices at t and t-1 (a small head motion between them)."""
  rng = np.random.default_rng(seed)
  a_id = rng.normal(size=(batch, model.num_id)) * 0.7
  a_exp = rng.normal(size=(batch, model.num_exp)) * 0.7
  verts = face3d.vertices(model, a_id, a_exp)
  pose = rng.uniform(-0.3, 0.3, size=(batch, 3))
  cam_t = face3d.Camera(jnp.asarray(pose, jnp.float32), jnp.full((batch,), 0.42 * size, jnp.float32),
                        jnp.full((batch, 2), size / 2, jnp.float32))
  cam_prev = cam_t.replace(pose=cam_t.pose + 0.02, translation=cam_t.translation + 0.01 * size)
  return face3d.project(verts, cam_t), face3d.project(verts, cam_prev)


def timed(fn, *args, reps):
  """Compile (first call) seconds, then the median and the minimum of `reps` steady calls."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return compile_s, float(np.median(times)), float(np.min(times))


def bucket(n):
  return 0 if n == 0 else 1 << max(8, (int(n) - 1).bit_length())


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="128,256,512")
  parser.add_argument("--details", default="low,high")
  parser.add_argument("--batches", default="1,8,64")
  parser.add_argument("--reps", type=int, default=10)
  parser.add_argument("--no-reference", action="store_true", help="skip the brute-force ratio")
  args = parser.parse_args()
  sizes = [int(s) for s in args.sizes.split(",")]
  batches = [int(b) for b in args.batches.split(",")]
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
  header = (f"{'tris':>6} {'px':>4} {'batch':>5} {'Q':>3} | {'raster ms/fr':>13} {'render ms/fr':>13} {'flow ms/fr':>13} "
            f"| {'compile s (r/rd/fl)':>19} | {'ref x':>7}")
  print(header)
  print("-" * len(header))
  for detail in args.details.split(","):
    model = face3d.procedural_model(detail=detail)
    tris = jnp.asarray(model.triangles)
    for size in sizes:
      chunk = render.default_chunk(model.num_triangles, size, size)
      ref_ratio = None
      for batch in batches:
        reps = max(2, args.reps // max(1, batch // 8))
        screen_t, screen_prev = posed_meshes(model, size, batch)
        capacity = bucket(np.max(np.asarray(render.chunks_needed(jnp.concatenate([screen_t, screen_prev]), tris, size, size, chunk))))
        image = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (batch, size, size, 3)), jnp.float32)
        kwargs = dict(chunk=chunk, capacity=capacity)

        raster = jax.jit(lambda v: render.rasterize(v, tris, size, size, **kwargs))

        def render_batch(target, identity, img):
          out = render.render_face(target, identity, tris, img, size, size, **kwargs)
          return out.render, out.face_mask

        render_fn = jax.jit(render_batch)

        def flow_one(v_t, v_prev, f_t, f_prev):
          return render.dense_flow(v_t, v_prev, tris, f_t, f_prev)

        c_r, t_r, m_r = timed(raster, screen_t, reps=reps)
        frags_t, frags_prev = raster(screen_t), raster(screen_prev)
        assert not np.asarray(frags_t.overflow).any() and not np.asarray(frags_prev.overflow).any()
        flow_fn = jax.jit(jax.vmap(flow_one))
        c_rd, t_rd, m_rd = timed(render_fn, screen_t, screen_prev, image, reps=reps)
        c_f, t_f, m_f = timed(flow_fn, screen_t, screen_prev, frags_t, frags_prev, reps=reps)
        if ref_ratio is None and not args.no_reference:
          start = time.perf_counter()
          rasterize_reference(np.asarray(screen_t[0]), np.asarray(tris), size, size)
          ref_ratio = (time.perf_counter() - start) / (t_r / batch)
        ratio = f"{ref_ratio:7.0f}" if (ref_ratio is not None and batch == batches[0]) else " " * 7
        per_frame = lambda med, low: f"{1e3 * med / batch:6.2f} ({1e3 * low / batch:5.2f})"
        print(f"{model.num_triangles:>6} {size:>4} {batch:>5} {chunk:>3} | {per_frame(t_r, m_r)} {per_frame(t_rd, m_rd)} "
              f"{per_frame(t_f, m_f)} | {c_r:5.1f} {c_rd:6.1f} {c_f:6.1f} | {ratio}", flush=True)


if __name__ == "__main__":
  main()
