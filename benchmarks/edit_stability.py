"""Temporal stability of face swaps: our per-clip preparation against frame-by-frame editing.

    python benchmarks/edit_stability.py --checkpoint=/tmp/tfvgan_demo     # the six shared clips
    python benchmarks/edit_stability.py --checkpoint=RUN --source=face.jpg --targets=a.mp4,b.mp4

Swaps --source onto each target with four preparations and prints the temporal warping error E_tmp
(Farneback flow, `metrics.temporal_error_optical_flow`, x 1e-6, lower is steadier) of the face
region (the target's crop at the checkpoint's size, the same box for every variant), with the flow
of the output itself / of the target video (Lai et al.'s protocol):

  frame by frame   every frame fitted alone, no landmark smoothing (EditSettings.per_frame): the
                   baseline the issue's target is measured against
  clip, raw        one identity per clip and the fit's temporal terms, landmarks not smoothed
  clip, gauss 1    ... landmarks smoothed with a fixed zero-lag Gaussian (sigma 1 frame)
  clip, adaptive   ... the Gaussian narrowed on fast motion (the EditSettings defaults)

and, last, each variant's E_tmp over the baseline's, averaged over the clips.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import tempfile

import numpy as np

TESTDATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "testdata"
CLIPS = ("d10", "d11", "d12", "d18", "d19", "d20")


def face_crops(path: str, box, size: int) -> np.ndarray:
  from tfvgan_jax.prep import crop, video
  return np.stack([crop.crop_image(f.image, box, size) for f in video.read_frames(path)])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True, help="a training workdir")
  parser.add_argument("--source", default=str(TESTDATA / "images" / "d8.jpg"), help="identity picture or video")
  parser.add_argument("--targets", default=",".join(str(TESTDATA / "videos" / f"{c}.mp4") for c in CLIPS),
                      help="comma-separated target videos")
  args = parser.parse_args()
  from tfvgan_jax import edit, metrics

  defaults = edit.EditSettings()
  variants = {
      "frame by frame": dataclasses.replace(defaults, per_frame=True),
      "clip, raw": dataclasses.replace(defaults, prep=dataclasses.replace(defaults.prep, smooth=0.0)),
      "clip, gauss 1": dataclasses.replace(defaults, prep=dataclasses.replace(defaults.prep, smooth=1.0, smooth_motion=0.0)),
      "clip, adaptive": defaults,
  }
  checkpoint = edit.load_checkpoint(args.checkpoint)
  work = tempfile.mkdtemp(prefix="edit_stability_")
  size = checkpoint.image_size
  print(f"checkpoint step {checkpoint.step}, {size} px; source {args.source}; E_tmp x 1e-6, own flow / target's flow")
  print(f"{'target':12s}" + "".join(f"{name:>22s}" for name in variants))
  ratios = {name: [] for name in variants}
  for target in args.targets.split(","):
    box = edit.Editor(checkpoint, cache_dir=os.path.join(work, "box"), settings=variants["clip, raw"]).prepare(
        target, "target").fitted.box
    target_crops = face_crops(target, box, size)
    errors = {}
    for name, settings in variants.items():
      out = os.path.join(work, "out.mp4")
      edit.Editor(checkpoint, cache_dir=os.path.join(work, "cache"), settings=settings).swap(args.source, target, out)
      crops = face_crops(out, box, size)
      errors[name] = (metrics.temporal_error_optical_flow(crops), metrics.temporal_error_optical_flow(crops, flow_frames=target_crops))
    for name, pair in errors.items():
      ratios[name].append(np.divide(pair, errors["frame by frame"]))
    print(f"{pathlib.Path(target).stem:12s}" + "".join(f"{own * 1e6:11.1f} /{tgt * 1e6:8.1f}" for own, tgt in errors.values()),
          flush=True)
  print(f"{'/ baseline':12s}" + "".join(f"{np.mean(r, 0)[0]:11.3f} /{np.mean(r, 0)[1]:8.3f}" for r in ratios.values()))


if __name__ == "__main__":
  main()
