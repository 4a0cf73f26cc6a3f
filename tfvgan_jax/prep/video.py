"""Video files in and out with PyAV (FFmpeg), frame by frame.

`read_frames` is a generator: a video is decoded as it is consumed, never held whole in memory, so
hour-long inputs cost one frame of memory. Every problem with an input (missing, empty, not a
video, no video stream, broken mid-stream) raises `VideoError` naming the file, and for a decoding
failure the frame it happened at, so a batch job can skip that input with a reason.

Frames are RGB uint8 [H, W, 3], numbered from 0 in presentation order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from typing import NamedTuple, Optional

import av
import numpy as np


class VideoError(ValueError):
  """A video that cannot be read; the message names the file and the problem.

  `reason` is a short key a batch job counts skipped inputs by: missing, empty_file, unreadable,
  no_video_stream, decode_error or no_frames.
  """

  def __init__(self, path, problem: str, reason: str = "unreadable"):
    self.path = os.fspath(path)
    self.problem = problem
    self.reason = reason
    super().__init__(f"{self.path}: {problem}")


class VideoInfo(NamedTuple):
  """What the container says of its first video stream.

  Attributes:
    width, height: frame size in pixels.
    fps: average frame rate (frames per second).
    num_frames: the container's frame count, or 0 where it does not record one.
    duration: seconds, or 0.0 where unknown.
  """

  width: int
  height: int
  fps: float
  num_frames: int
  duration: float


class Frame(NamedTuple):
  """One decoded frame: its number, its presentation time in seconds and its RGB pixels."""

  index: int
  time: float
  image: np.ndarray


def _open(path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise VideoError(path, "no such file", "missing")
  if os.path.getsize(path) == 0:
    raise VideoError(path, "the file is empty", "empty_file")
  try:
    container = av.open(path)
  except (av.FFmpegError, UnicodeDecodeError) as error:
    raise VideoError(path, f"not a readable video ({error})") from error
  if not container.streams.video:
    container.close()
    raise VideoError(path, "the file has no video stream", "no_video_stream")
  return container, container.streams.video[0]


def probe(path) -> VideoInfo:
  """Reads the header of `path` (no decoding).

  Raises:
    VideoError: the file is missing, empty, not a video or has no video stream.
  """
  container, stream = _open(path)
  with container:
    rate = stream.average_rate or stream.guessed_rate or 0
    duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
    if not duration and container.duration:
      duration = container.duration / av.time_base
    return VideoInfo(width=stream.codec_context.width, height=stream.codec_context.height, fps=float(rate),
                     num_frames=int(stream.frames or 0), duration=duration)


def read_frames(path, start: int = 0, stop: Optional[int] = None, step: int = 1) -> Iterator[Frame]:
  """Decodes frames start, start + step, ... (before `stop`) of `path`, one at a time.

  Args:
    path: a video file FFmpeg can read.
    start, stop, step: which frames, as in `range`; stop None reads to the end.

  Yields:
    `Frame`s in presentation order.

  Raises:
    VideoError: the file cannot be opened, or decoding fails (the message gives the frame number).
      A video with no decodable frame at all raises too.
  """
  if start < 0 or step < 1 or (stop is not None and stop < start):
    raise ValueError(f"invalid frame range start={start} stop={stop} step={step}")
  container, stream = _open(path)
  stream.thread_type = "AUTO"
  index = -1
  with container:
    try:
      for index, frame in enumerate(container.decode(stream)):
        if stop is not None and index >= stop:
          break
        if index >= start and (index - start) % step == 0:
          time = float(frame.time) if frame.time is not None else index / float(stream.average_rate or 1)
          yield Frame(index, time, frame.to_ndarray(format="rgb24"))
    except av.FFmpegError as error:
      raise VideoError(path, f"decoding failed after frame {index} ({error})", "decode_error") from error
  if index < 0:
    raise VideoError(path, "no frame could be decoded", "no_frames")


def write_video(path, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> int:
  """Encodes RGB uint8 frames as H.264 (yuv420p) in an mp4 (or any container FFmpeg infers from the name).

  Args:
    path: output file; its folder must exist.
    frames: [H, W, 3] uint8 arrays of one even size (yuv420p halves the chroma resolution).
    fps: frame rate.
    crf: x264 constant rate factor (0 lossless luma, 18 visually near-lossless, 23 default).

  Returns:
    The number of frames written.

  Raises:
    ValueError: a frame of another size or type, or an odd size; the file is removed.
  """
  path = os.fspath(path)
  count = 0
  try:
    with av.open(path, mode="w") as container:
      stream = None
      for frame in frames:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
          raise ValueError(f"{path}: frame {count} must be [H, W, 3] uint8, got {frame.shape} {frame.dtype}")
        if stream is None:
          height, width = frame.shape[:2]
          if height % 2 or width % 2:
            raise ValueError(f"{path}: H.264 in yuv420p needs an even frame size, got {width}x{height}")
          stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
          stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
          stream.options = {"crf": str(crf)}
        elif frame.shape[:2] != (stream.height, stream.width):
          raise ValueError(f"{path}: frame {count} is {frame.shape[1]}x{frame.shape[0]}, "
                           f"the video is {stream.width}x{stream.height}")
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
          container.mux(packet)
        count += 1
      if stream is None:
        raise ValueError(f"{path}: no frames to write")
      for packet in stream.encode():
        container.mux(packet)
  except BaseException:
    if os.path.exists(path):
      os.remove(path)
    raise
  return count
