"""Frames per second of each real-video preparation stage, and of the whole job, on one CPU core.

    python benchmarks/prep_bench.py                          # the shared clips if present, else synthetic mp4s
    python benchmarks/prep_bench.py --videos='DIR/*.mp4' --size=256 --cpus=1 --max_frames=150

The process is pinned to --cpus cores (os.sched_setaffinity), so the figures are per core with
--cpus=1. Stages, each over the same frames:

  decode       PyAV decoding to RGB
  detect       the short-range face detector on every frame (the job runs it every --detect_every
               frames: its amortized share is printed too)
  landmarks    Face Mesh from the previous frame's landmarks (affine crop + model)
  track        the job's first pass: decode + detect every N + landmarks + smoothing
  fit          the per-clip fit (68 landmarks; after its bucket is compiled, compile time apart)
  crop+encode  the job's second pass: decode + stable crop + resize + JPEG at --size
  write        TFDS ArrayRecord writing of the finished records
  end to end   `data_prep.build` on all the clips with Beam's DirectRunner (one worker), in this
               process, run twice into fresh folders: the first includes Beam start-up and model
               loading (the fit is already compiled by the fit stage), the second is the rate
               of a long job
  workers      `python -m data_prep.build` as a fresh process per run, free to use every core
               of this machine, with --direct_num_workers=N for each N of --workers (and for
               N > 1, each --direct_running_mode of --modes: N processes, or N threads of one
               process), --repeats times each after one untimed run that fills the workers'
               compilation cache: the median wall time (start-up and the workers' model loading
               included), and the share of the job that is the launching machine's own work
               after the pipeline (the summary's seconds_after_pipeline over its seconds). Other
               work on the machine perturbs these figures; the medians are what to compare.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time


SHARED_CLIPS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "testdata" / "videos" / "*.mp4"


def synthetic_videos(folder: str, count: int, frames: int) -> list[str]:
  from tfvgan_jax import face3d
  from tfvgan_jax.data import synthetic
  from tfvgan_jax.prep import video
  model = face3d.load_model("procedural:medium")
  paths = []
  for seed in range(count):
    truth = synthetic.sample_video(model, seed, frames, 512)
    images = synthetic.render_frames(model, truth.appearance, truth.id_coeffs, truth.exp_coeffs, truth.cameras, 512)
    paths.append(os.path.join(folder, f"synthetic{seed}.mp4"))
    video.write_video(paths[-1], images, fps=25)
  return paths


def rate(frames: int, seconds: float) -> str:
  return f"{frames / seconds:8.1f} frames/s  ({seconds / frames * 1e3:6.2f} ms/frame)"


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--videos", default=str(SHARED_CLIPS), help="glob of input videos")
  parser.add_argument("--size", type=int, default=256, help="output crop size")
  parser.add_argument("--cpus", type=int, default=1, help="cores to pin the process to (0: no pinning)")
  parser.add_argument("--max_frames", type=int, default=150, help="frames per video")
  parser.add_argument("--face_model", default="procedural:medium")
  parser.add_argument("--workers", default="1,2", help="Beam worker counts of the 'workers' runs ('' skips them)")
  parser.add_argument("--modes", default="multi_processing,multi_threading",
                      help="--direct_running_mode of the runs with more than one worker")
  parser.add_argument("--repeats", type=int, default=3, help="runs per worker count")
  parser.add_argument("--only_workers", action="store_true", help="skip the per-stage and in-process figures")
  args = parser.parse_args()
  cores = os.sched_getaffinity(0)
  if args.only_workers:
    videos = args.videos if glob.glob(args.videos) else os.path.join(
        os.path.dirname(synthetic_videos(tempfile.mkdtemp(prefix="prep_bench_"), 3, args.max_frames)[0]), "*.mp4")
    worker_runs(args, videos, cores)
    return
  if args.cpus:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.cpus]))
  from data_prep import build
  from tfvgan_jax import face3d
  from tfvgan_jax.data import records
  from tfvgan_jax.prep import clip, detect, landmarks, model_files, video

  work = tempfile.mkdtemp(prefix="prep_bench_")
  paths = sorted(glob.glob(args.videos)) or synthetic_videos(work, 3, args.max_frames)
  models = model_files.find_models()
  detector, mesh = detect.FaceDetector(models.detector), landmarks.FaceMesh(models.landmarks)
  model = face3d.load_model(args.face_model)
  settings = clip.PrepSettings(image_size=args.size, max_frames=args.max_frames)
  print(f"{len(paths)} videos, up to {args.max_frames} frames each, {args.size} px output, "
        f"{len(os.sched_getaffinity(0))} core(s), face model {model.name}")

  frames = [f.image for p in paths for f in video.read_frames(p, stop=args.max_frames)]
  n = len(frames)
  start = time.perf_counter()
  for p in paths:
    for _ in video.read_frames(p, stop=args.max_frames):
      pass
  decode = time.perf_counter() - start

  start = time.perf_counter()
  found = [detector(image) for image in frames]
  detect_s = time.perf_counter() - start
  rois = [landmarks.roi_from_detection(d[0]) for d in found if d]
  start = time.perf_counter()
  roi = rois[0]
  for image in frames:
    result = mesh(image, roi)
    roi = landmarks.roi_from_landmarks(result.points)
  landmark_s = time.perf_counter() - start

  start = time.perf_counter()
  tracks = [clip.track_video(p, detector, mesh, settings) for p in paths]
  track_s = time.perf_counter() - start

  clip.fit_track(tracks[0], model, settings)  # compiles the bucket
  start = time.perf_counter()
  fitted = [clip.fit_track(t, model, settings) for t in tracks]
  fit_s = time.perf_counter() - start
  tracked = sum(len(t.frames) for t in tracks)

  start = time.perf_counter()
  jpegs = [[records.encode_jpeg(image) for _, image in clip.crop_frames(p, t, f.box, args.size)]
           for p, t, f in zip(paths, tracks, fitted)]
  encode_s = time.perf_counter() - start

  def examples():
    for v, (t, f, j) in enumerate(zip(tracks, fitted, jpegs)):
      for k, frame in enumerate(t.frames):
        yield {"image": j[k], "id_coeffs": f.fit.id_coeffs, "exp_coeffs": f.fit.exp_coeffs[k],
               "camera": f.fit.cameras[k], "landmarks": f.landmarks[k], "video_id": f"v{v}",
               "frame_index": int(frame), "crop_to_source": f.crop_to_source, "source_path": paths[v],
               "fit_residual": f.fit.residual[k]}

  start = time.perf_counter()
  records.write_dataset(os.path.join(work, "records"), "bench", examples(), model, args.size)
  write_s = time.perf_counter() - start

  end_to_end = []
  for run in range(2):
    start = time.perf_counter()
    build.main([f"--input={args.videos if glob.glob(args.videos) else os.path.join(work, '*.mp4')}",
                f"--out={os.path.join(work, f'job{run}')}", f"--face_model={args.face_model}",
                f"--size={args.size}", f"--max_frames={args.max_frames}", "--runner=DirectRunner"])
    end_to_end.append(time.perf_counter() - start)

  every = settings.track.detect_every
  print()
  print(f"decode       {rate(n, decode)}")
  print(f"detect       {rate(n, detect_s)}   every {every} frames: {detect_s / n / every * 1e3:.2f} ms/frame")
  print(f"landmarks    {rate(n, landmark_s)}")
  print(f"track        {rate(tracked, track_s)}   (decode + detect/{every} + landmarks + smoothing)")
  print(f"fit          {rate(tracked, fit_s)}")
  print(f"crop+encode  {rate(tracked, encode_s)}   (second decode + crop + resize + JPEG)")
  print(f"write        {rate(tracked, write_s)}")
  print(f"stages sum   {rate(tracked, track_s + fit_s + encode_s + write_s)}")
  print(f"end to end   {rate(tracked, end_to_end[1])}   steady; first run {end_to_end[0]:.1f} s "
        f"({tracked / end_to_end[0]:.1f} frames/s) with start-up")
  worker_runs(args, args.videos if glob.glob(args.videos) else os.path.join(work, "*.mp4"), cores)


def worker_runs(args, videos: str, cores: set) -> None:
  """The job as a fresh process per run, on every core, at each --workers count (and, for more than
  one worker, each of --modes)."""
  # (workers, running mode): one worker runs in the launching process, with no mode.
  setups = [(int(n), mode) for n in args.workers.split(",") if n
            for mode in (args.modes.split(",") if int(n) > 1 else [""])]
  if not setups:
    return
  work = tempfile.mkdtemp(prefix="prep_bench_workers_")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(pathlib.Path(__file__).resolve().parents[1]),
                                                                  os.environ.get("PYTHONPATH")])))
  results = {setup: [] for setup in setups}
  # One untimed run first: it fills the workers' compilation cache (`--compilation_cache`), which
  # every timed run then finds, whatever its worker count.
  for repeat in [-1, *range(args.repeats)]:
    for n, mode in setups[:1] if repeat < 0 else setups:  # interleaved: a burst of other work falls on all alike
      out = os.path.join(work, f"w{n}{mode}_{repeat}")
      flags = [f"--direct_num_workers={n}"] + ([f"--direct_running_mode={mode}"] if mode else [])
      start = time.perf_counter()
      subprocess.run([sys.executable, "-m", "data_prep.build", f"--input={videos}", f"--out={out}",
                      f"--face_model={args.face_model}", f"--size={args.size}", f"--max_frames={args.max_frames}",
                      "--runner=DirectRunner", *flags], check=True, env=env, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, preexec_fn=lambda: os.sched_setaffinity(0, cores))
      wall = time.perf_counter() - start
      if repeat < 0:
        continue
      with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
      results[n, mode].append((wall, summary["seconds_after_pipeline"], summary["seconds"], summary["frames"]))
  print()
  for (n, mode), runs in results.items():
    walls = [r[0] for r in runs]
    shares = [r[1] / r[2] for r in runs]
    frames = runs[0][3]
    name = f"{n} {mode}" if mode else f"{n}"
    median = statistics.median(walls)
    print(f"workers={name}    median {median:6.1f} s  ({frames / median:6.1f} frames/s"
          f" on {len(cores)} cores; runs {', '.join(f'{w:.1f}' for w in walls)} s)   after the pipeline: median "
          f"{statistics.median(r[1] for r in runs) * 1e3:.0f} ms = {100 * statistics.median(shares):.2f}% of the job")


if __name__ == "__main__":
  main()
