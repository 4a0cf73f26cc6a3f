"""Speed and accuracy of per-clip 3DMM fitting (prep.fit) on synthetic clips, one process.

    python benchmarks/fit_bench.py                         # buckets 16..256, 68 landmarks
    python benchmarks/fit_bench.py --frames=128 --reps=5 --dense

For each clip length: the compile time of its bucket (the first call, minus a steady call), then
ms per frame of steady calls (median, minimum in brackets; a shared machine is noisy), and the fit's
accuracy against the synthetic ground truth at 256 px with 0.5 px landmark noise: the largest pose
error (degrees), the mean landmark reprojection error against the noise-free points (px), and the
correlations of the identity and expression coefficients with the truth. --dense also fits every
vertex of the 'low' model (513 points) as landmarks.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tfvgan_jax import face3d
from tfvgan_jax.data import synthetic
from tfvgan_jax.prep import fit

SIZE = 256


def synthetic_clip(model, seed, num_frames, ids, noise):
  truth = synthetic.sample_video(model, seed, num_frames, SIZE)
  verts = face3d.vertices(model, truth.id_coeffs, truth.exp_coeffs)[:, ids]
  points = np.asarray(face3d.project(verts, face3d.Camera.from_vector(truth.cameras)))[..., :2]
  return truth, points, points + noise * np.random.default_rng(seed).normal(size=points.shape)


def accuracy(model, result, truth, ids, points):
  verts = face3d.vertices(model, result.id_coeffs, result.exp_coeffs)[:, ids]
  fitted = np.asarray(face3d.project(verts, face3d.Camera.from_vector(result.cameras)))[..., :2]
  return (float(np.degrees(np.abs(result.cameras[:, :3] - truth.cameras[:, :3]).max())),
          float(np.linalg.norm(fitted - points, axis=-1).mean()),
          float(np.corrcoef(result.id_coeffs, truth.id_coeffs)[0, 1]),
          float(np.corrcoef(result.exp_coeffs.ravel(), truth.exp_coeffs.ravel())[0, 1]))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", default="16,32,64,128,256", help="comma-separated clip lengths")
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--detail", default="medium")
  parser.add_argument("--noise", type=float, default=0.5, help="landmark noise std in pixels")
  parser.add_argument("--seeds", type=int, default=3, help="clips per length for the accuracy columns")
  parser.add_argument("--dense", action="store_true")
  args = parser.parse_args()

  model = face3d.load_model(f"procedural:{args.detail}")
  setups = [("68 landmarks", np.asarray(model.landmarks))]
  if args.dense:
    low = face3d.load_model("procedural:low")
    setups.append((f"{low.num_vertices} vertices (low)", np.arange(low.num_vertices)))
  print(f"config: {fit.FitConfig()}")
  for name, ids in setups:
    fitted_model = model if ids.size == 68 else face3d.load_model("procedural:low")
    print(f"\n{name}, model {fitted_model.name} ({fitted_model.num_vertices} vertices), noise {args.noise} px")
    print("frames bucket  compile_s  ms/frame (min)   pose_err_deg  reproj_px  corr_id  corr_exp")
    for num_frames in (int(f) for f in args.frames.split(",")):
      truth, points, observed = synthetic_clip(fitted_model, 0, num_frames, ids, args.noise)
      start = time.perf_counter()
      fit.fit_clip(fitted_model, observed, vertex_ids=ids)
      first = time.perf_counter() - start
      times = []
      for _ in range(args.reps):
        start = time.perf_counter()
        fit.fit_clip(fitted_model, observed, vertex_ids=ids)
        times.append(time.perf_counter() - start)
      rows = []
      for seed in range(args.seeds):
        truth, points, observed = synthetic_clip(fitted_model, seed, num_frames, ids, args.noise)
        rows.append(accuracy(fitted_model, fit.fit_clip(fitted_model, observed, vertex_ids=ids), truth, ids, points))
      pose, reproj, corr_id, corr_exp = np.array(rows).T
      print(f"{num_frames:6d} {fit.bucket_size(num_frames):6d} {first - np.median(times):10.2f} "
            f"{1e3 * np.median(times) / num_frames:9.3f} ({1e3 * np.min(times) / num_frames:.3f}) "
            f"{pose.max():13.2f} {reproj.max():10.3f} {corr_id.min():8.3f} {corr_exp.min():9.3f}")
  print("\naccuracy columns: worst over the seeds (largest error, smallest correlation)")


if __name__ == "__main__":
  main()
