"""Many small edits: one `--jobs` run against the same edits as separate commands.

    python benchmarks/edit_jobs_bench.py --checkpoint=RUN --source=face.png --target=clip.mp4 [--jobs=50]

Writes a jobs file of --jobs face swaps of --source onto --target (each to its own output), times
`python -m tfvgan_jax.edit --jobs=FILE` once, and times --separate of the same edits as separate
`python -m tfvgan_jax.edit --task=swap ...` commands, extrapolated to --jobs. Both share one warm
preparation cache (tracked once before timing), so the difference is what loading the models,
JAX and the compiled network once instead of per edit saves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--source", required=True)
  parser.add_argument("--target", required=True)
  parser.add_argument("--jobs", type=int, default=50)
  parser.add_argument("--separate", type=int, default=5, help="separate runs timed (then scaled to --jobs)")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(prefix="edit_jobs_bench_") as folder:
    cache = os.path.join(folder, "cache")
    command = [sys.executable, "-m", "tfvgan_jax.edit", f"--checkpoint={args.checkpoint}", f"--cache_dir={cache}",
               "--noprogress"]
    single = lambda n: [*command, "--task=swap", f"--source={args.source}", f"--target={args.target}",  # noqa: E731
                        f"--out={os.path.join(folder, f'single{n}.mp4')}"]
    subprocess.run(single("warm"), check=True, capture_output=True)
    jobs = os.path.join(folder, "jobs.jsonl")
    with open(jobs, "w") as f:
      for n in range(args.jobs):
        f.write(json.dumps({"task": "swap", "source": args.source, "target": args.target, "out": f"job{n}.mp4"}) + "\n")
    start = time.perf_counter()
    subprocess.run([*command, f"--jobs={jobs}"], check=True, capture_output=True)
    together = time.perf_counter() - start
    start = time.perf_counter()
    for n in range(args.separate):
      subprocess.run(single(n), check=True, capture_output=True)
    separate = (time.perf_counter() - start) / args.separate
  print(f"{args.jobs} jobs in one --jobs run: {together:.1f} s ({together / args.jobs:.2f} s per job)")
  print(f"separate runs: {separate:.1f} s each, {separate * args.jobs:.0f} s for {args.jobs} "
        f"(measured over {args.separate})")
  print(f"one run takes {together / (separate * args.jobs):.2f} of the separate runs' time")


if __name__ == "__main__":
  main()
