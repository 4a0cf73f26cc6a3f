"""Speed of the geometry engine: rasterize, render (R, M^) and dense flow, in ms per frame.

    python benchmarks/render_bench.py                      # the full table (a few minutes on 2 cores)
    python benchmarks/render_bench.py --sizes=128,256 --batches=8 --details=high --sim3dr=/tmp/sim3dr

Meshes are the procedural face ('low' ~1k and 'high' ~75k triangles, BFM density) filling the
crop as in training, turned a little. Times are ms per frame, the median of --reps interleaved
runs (a shared 2-core machine is noisy); compile time is reported apart. The rasterizer is timed
two ways inside jit:

  sized      capacity=N from `render.chunks_needed` on the same meshes (power-of-two bucket), as a
             caller who measured its data would pass it: straight-line code, no loop
  training   no capacity (the default 'auto'), as training, editing and evaluation call it

"render" is R and M^ for one sample (two rasterizations, target and identity frame, and the
texture transfer) and "flow" is dense_flow on given fragments, both as training calls them. With
--sim3dr naming a folder where the compiled Sim3DR rasterizer of 3DDFA_V2 was built
(../shared/reference/README.md says how), it is timed on the same meshes, one frame after another
(its z-buffer pass with per-vertex colours; it gives no triangle ids or barycentrics). The
brute-force NumPy rasterizer of the tests is timed on one frame per size for the speed ratio
(--reference).
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


def compile_seconds(fn, *args):
  """Seconds of the first call (compilation and one run)."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def sim3dr_rasterizer(folder):
  """Sim3DR's rasterize for one frame [N, 3] (screen pixels, z toward the viewer), or None."""
  if not folder:
    return None
  sys.path.insert(0, folder)
  try:
    import Sim3DR_Cython  # noqa: PLC0415 - optional third-party reference, built outside the project
  except ImportError:
    print(f"Sim3DR is not built in {folder}: not timed")
    return None

  def rasterize_frames(vertices, triangles, size):
    for frame in vertices:
      image = np.zeros((size, size, 3), np.uint8)
      depth = np.full((size, size), -1e8, np.float32)
      colors = np.ones((frame.shape[0], 3), np.float32)
      Sim3DR_Cython.rasterize(image, frame, triangles, colors, depth, len(triangles), size, size, 3, reverse=False)

  return rasterize_frames


def interleaved(fns, reps):
  """Median and minimum seconds of each function, after one call each, repetitions interleaved."""
  for fn in fns.values():
    jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for _ in range(reps):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: (float(np.median(t)), float(np.min(t))) for name, t in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="128,256,512")
  parser.add_argument("--details", default="low,high")
  parser.add_argument("--batches", default="1,8,64")
  parser.add_argument("--reps", type=int, default=10)
  parser.add_argument("--sim3dr", default="", help="folder holding the built Sim3DR_Cython module")
  parser.add_argument("--reference", action="store_true", help="also time the brute-force NumPy rasterizer")
  args = parser.parse_args()
  sizes = [int(s) for s in args.sizes.split(",")]
  batches = [int(b) for b in args.batches.split(",")]
  sim3dr = sim3dr_rasterizer(args.sim3dr)
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); ms per frame, median (min)")
  header = (f"{'tris':>6} {'px':>4} {'batch':>5} {'Q':>3} | {'sized':>13} {'training':>13} {'Sim3DR':>13} "
            f"{'train/sized':>11} {'train/Sim3DR':>12} | {'render':>13} {'flow':>13} | {'compile s (r/rd/fl)':>19} "
            f"| {'ref x':>7}")
  print(header)
  print("-" * len(header))
  for detail in args.details.split(","):
    model = face3d.procedural_model(detail=detail)
    tris = jnp.asarray(model.triangles)
    tris_np = np.ascontiguousarray(model.triangles, np.int32)
    for size in sizes:
      chunk = render.default_chunk(model.num_triangles, size, size)
      for batch in batches:
        reps = max(3, args.reps // max(1, batch // 8))
        screen_t, screen_prev = posed_meshes(model, size, batch)
        capacity = render.capacity_bucket(
            np.max(np.asarray(render.chunks_needed(jnp.concatenate([screen_t, screen_prev]), tris, size, size, chunk))))
        image = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (batch, size, size, 3)), jnp.float32)
        sized = jax.jit(lambda v: render.rasterize(v, tris, size, size, chunk=chunk, capacity=capacity))
        training = jax.jit(lambda v: render.rasterize(v, tris, size, size))

        def render_batch(target, identity, img):
          out = render.render_face(target, identity, tris, img, size, size)
          return out.render, out.face_mask

        render_fn = jax.jit(render_batch)
        flow_fn = jax.jit(jax.vmap(lambda v_t, v_prev, f_t, f_prev: render.dense_flow(v_t, v_prev, tris, f_t, f_prev)))
        c_r = compile_seconds(training, screen_t)
        c_rd = compile_seconds(render_fn, screen_t, screen_prev, image)
        frags_t, frags_prev = training(screen_t), training(screen_prev)
        assert not np.asarray(frags_t.overflow).any() and not np.asarray(frags_prev.overflow).any()
        np.testing.assert_array_equal(np.asarray(frags_t.triangle_id), np.asarray(sized(screen_t).triangle_id))
        c_f = compile_seconds(flow_fn, screen_t, screen_prev, frags_t, frags_prev)
        fns = {"sized": lambda: sized(screen_t), "training": lambda: training(screen_t),
               "render": lambda: render_fn(screen_t, screen_prev, image),
               "flow": lambda: flow_fn(screen_t, screen_prev, frags_t, frags_prev)}
        if sim3dr is not None:
          frames = [np.ascontiguousarray(v, np.float32) for v in np.asarray(screen_t)]
          fns["Sim3DR"] = lambda: sim3dr(frames, tris_np, size)
        t = interleaved(fns, reps)
        per_frame = lambda name: f"{1e3 * t[name][0] / batch:6.2f} ({1e3 * t[name][1] / batch:5.2f})" if name in t else " " * 13  # noqa: E731
        versus_sim3dr = f"{t['training'][0] / t['Sim3DR'][0]:11.2f}x" if "Sim3DR" in t else " " * 12
        ratio = " " * 7
        if args.reference and batch == batches[0]:
          start = time.perf_counter()
          rasterize_reference(np.asarray(screen_t[0]), np.asarray(tris), size, size)
          ratio = f"{(time.perf_counter() - start) / (t['training'][0] / batch):7.0f}"
        print(f"{model.num_triangles:>6} {size:>4} {batch:>5} {chunk:>3} | {per_frame('sized')} {per_frame('training')} "
              f"{per_frame('Sim3DR')} {t['training'][0] / t['sized'][0]:10.2f}x {versus_sim3dr} | {per_frame('render')} "
              f"{per_frame('flow')} | {c_r:5.1f} {c_rd:6.1f} {c_f:6.1f} | {ratio}", flush=True)


if __name__ == "__main__":
  main()
