"""Inputs for the editing tests: synthetic talking heads as mp4 (one with audio) and a picture."""

import av
import numpy as np
from PIL import Image

from tfvgan_jax import face3d
from tfvgan_jax.data import synthetic
from tfvgan_jax.prep import video

FRAMES = 8


def talking_head(model, seed, frames=FRAMES, size=128):
  truth = synthetic.sample_video(model, seed, frames, size)
  return synthetic.render_frames(model, truth.appearance, truth.id_coeffs, truth.exp_coeffs, truth.cameras, size)


def write_with_audio(path, frames, fps=25, sample_rate=16000):
  """An mp4 with H.264 video and a 440 Hz AAC tone as long as the video."""
  with av.open(str(path), mode="w") as container:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
    audio = container.add_stream("aac", rate=sample_rate)
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    seconds = len(frames) / fps
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sample_rate)) / sample_rate)).astype(np.float32)
    for start in range(0, len(tone), 1024):
      chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
      chunk.sample_rate = sample_rate
      for packet in audio.encode(chunk):
        container.mux(packet)
    for encoder in (stream, audio):
      for packet in encoder.encode():
        container.mux(packet)
  return path


def make_inputs(folder):
  """target.mp4 (with audio), driving.mp4 and expression.mp4 (30 fps), source.png, gap.mp4 (3 faceless
  frames, 5 with a face, 3 faceless, 6 with the face again) and wall.mp4 (no face)."""
  model = face3d.load_model("procedural:low")
  paths = {"target": write_with_audio(folder / "target.mp4", talking_head(model, 1))}
  for name, seed in (("driving", 2), ("expression", 3)):
    paths[name] = folder / f"{name}.mp4"
    video.write_video(paths[name], talking_head(model, seed), fps=30)
  paths["source"] = folder / "source.png"
  Image.fromarray(talking_head(model, 4, frames=1)[0]).save(paths["source"])
  blank = [np.full((128, 128, 3), 40, np.uint8)] * 3
  paths["gap"] = folder / "gap.mp4"
  face = list(talking_head(model, 5, frames=11))
  video.write_video(paths["gap"], blank + face[:5] + blank + face[5:], fps=25)
  paths["wall"] = folder / "wall.mp4"
  video.write_video(paths["wall"], blank * 3, fps=25)
  paths["pair"] = folder / "pair.mp4"
  video.write_video(paths["pair"], np.concatenate([talking_head(model, 1), talking_head(model, 6)], axis=2), fps=25)
  paths["right"] = folder / "right.png"
  Image.fromarray(talking_head(model, 6, frames=FRAMES + 6)[-1]).save(paths["right"])
  paths["blank"] = folder / "blank.png"
  Image.fromarray(blank[0]).save(paths["blank"])
  return paths
