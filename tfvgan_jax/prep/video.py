"""Video files in and out with PyAV (FFmpeg), frame by frame.

`read_frames` is a generator: a video is decoded as it is consumed, never held whole in memory, so
hour-long inputs cost one frame of memory. Every problem with an input (missing, empty, not a
video, no video stream, broken mid-stream) raises `VideoError` naming the file, and for a decoding
failure the frame it happened at, so a batch job can skip that input with a reason.

Frames are RGB uint8 [H, W, 3], numbered from 0 in presentation order.

`write_video` also writes the output side of editing: it can copy the soundtrack of the source video
(packets remuxed as they are where the container takes the codec, else re-encoded to AAC; in both
cases streamed, interleaved with the video by time) and tag the container. Edited videos should carry
`SYNTHETIC_TAGS`, which `is_marked_synthetic` recognises.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from typing import NamedTuple, Optional

import av
import numpy as np

from tfvgan_jax import files


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
    has_audio: whether the file also has an audio stream.
  """

  width: int
  height: int
  fps: float
  num_frames: int
  duration: float
  has_audio: bool = False


class Frame(NamedTuple):
  """One decoded frame: its number, its presentation time in seconds and its RGB pixels."""

  index: int
  time: float
  image: np.ndarray


def _open_media(path) -> av.container.InputContainer:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise VideoError(path, "no such file", "missing")
  if os.path.getsize(path) == 0:
    raise VideoError(path, "the file is empty", "empty_file")
  try:
    return av.open(path)
  except (av.FFmpegError, UnicodeDecodeError) as error:
    raise VideoError(path, f"not a readable video ({error})") from error


def _open(path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
  container = _open_media(path)
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
                     num_frames=int(stream.frames or 0), duration=duration,
                     has_audio=bool(container.streams.audio))


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


SYNTHETIC_TAGS = {
    "comment": "synthetic video made with tfvgan_jax; not a real recording",
    "synthetic": "true",
    "digital_source_type": "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia",
}
"""Container tags for edited videos: a sentence for people (`comment`, which players and ffprobe show),
a key for programs (`synthetic`, read by `is_marked_synthetic`) and the IPTC digital-source-type term
(the vocabulary C2PA and schema.org use) for real footage composited with a trained model's output."""


def is_marked_synthetic(path) -> bool:
  """Whether the container tags of `path` mark it synthetic: its `synthetic` tag reads "true".

  Raises:
    VideoError: the file is missing, empty or unreadable.
  """
  with _open_media(path) as container:
    return container.metadata.get("synthetic", "").strip().lower() == "true"


def _write_tags(container: av.container.OutputContainer, metadata: dict) -> None:
  # The mp4/mov muxer drops every key but the iTunes-style standard ones (title, comment, ...) unless
  # told to write all of them as QuickTime `mdta` tags, which FFmpeg, ffprobe and PyAV read back.
  if container.format.name in ("mp4", "mov"):
    container.options["movflags"] = "use_metadata_tags"
  container.metadata.update({str(key): str(value) for key, value in metadata.items()})


class _Soundtrack:
  """The first audio stream of a source file, copied into an output container as the video is written.

  The source is read only as far as the video has got (`mux_until`), so memory stays at a packet or
  two however long the soundtrack. Of the span (start, stop) in source seconds, a packet (or, when
  re-encoding, a decoded frame) is kept when its presentation time t has start <= t < stop, and is
  shifted to t - start; a start <= 0 keeps the head of the stream, encoder-priming packets before
  time 0 included, unshifted. Packets go in unchanged where the output container takes the codec;
  otherwise they are decoded and re-encoded to AAC at the source's sample rate and channel count.
  """

  def __init__(self, path, span: Optional[tuple[float, float]]):
    self.start, self.stop = (0.0, math.inf) if span is None else (float(span[0]), float(span[1]))
    if not self.start < self.stop:
      raise ValueError(f"audio_range must be (start, stop) seconds with start < stop, got {span}")
    self.input = _open_media(path)
    self.source = self.input.streams.audio[0] if self.input.streams.audio else None
    self.packets: Iterator[av.Packet] = iter(())
    self.pending: Optional[av.Packet] = None

  def add_to(self, container: av.container.OutputContainer) -> None:
    """Adds the output audio stream (before anything is muxed); nothing where the source has no audio."""
    if self.source is None:
      return
    if self.source.codec_context.name in container.supported_codecs:
      output = container.add_stream_from_template(self.source)
      self.packets = self._copied(output)
    else:
      context = self.source.codec_context
      # The standard layout of that many channels: containers such as Matroska store PCM without one.
      layout = av.AudioLayout(f"{context.layout.nb_channels}c")
      output = container.add_stream("aac", rate=context.sample_rate, layout=layout)
      self.packets = self._reencoded(output)

  def _in_span(self, items: Iterator, time_of) -> Iterator:
    """The items (packets or frames, in presentation order) whose time falls in the span; reads no further."""
    for item in items:
      time = time_of(item)
      if time >= self.stop:
        return
      if self.start <= 0 or time >= self.start:
        yield item

  def _copied(self, output) -> Iterator[av.Packet]:
    # A demuxer ends with an empty packet without timestamps.
    packets = (packet for packet in self.input.demux(self.source) if packet.pts is not None)
    for packet in self._in_span(packets, lambda packet: float(packet.pts * packet.time_base)):
      if self.start > 0:
        offset = round(self.start / packet.time_base)
        packet.pts -= offset
        if packet.dts is not None:
          packet.dts -= offset
      packet.stream = output
      yield packet

  def _reencoded(self, output) -> Iterator[av.Packet]:
    context = output.codec_context
    context.time_base = Fraction(1, context.sample_rate)
    context.open()  # now, to learn the encoder's frame size (1024 for AAC)
    resampler = av.AudioResampler(format=context.format, layout=context.layout, rate=context.sample_rate,
                                  frame_size=context.frame_size)
    decoded = self._in_span(self.input.decode(self.source), lambda frame: float(frame.time))
    first = next(decoded, None)
    if first is None:
      return
    samples = max(0, round((float(first.time) - max(self.start, 0.0)) * context.sample_rate))
    for frame in itertools.chain([first], decoded, [None]):
      for chunk in resampler.resample(frame):
        chunk.pts, chunk.time_base = samples, context.time_base
        samples += chunk.samples
        yield from output.encode(chunk)
    yield from output.encode()

  def mux_until(self, container: av.container.OutputContainer, seconds: float) -> None:
    """Muxes the packets that start before `seconds` of the output (all of them for math.inf)."""
    while True:
      if self.pending is None:
        try:
          self.pending = next(self.packets, None)
        except av.FFmpegError as error:
          raise VideoError(self.input.name, f"reading its audio failed ({error})", "decode_error") from error
        if self.pending is None:
          return
      if self.pending.pts * self.pending.time_base >= seconds:
        return
      container.mux(self.pending)
      self.pending = None

  def close(self) -> None:
    self.input.close()


def write_video(path, frames: Iterable[np.ndarray], fps: float, crf: int = 18, audio_from=None,
                audio_range: Optional[tuple[float, float]] = None, metadata: Optional[dict] = None) -> int:
  """Encodes RGB uint8 frames as H.264 (yuv420p) in an mp4 (or any container FFmpeg infers from the name).

  Args:
    path: output file; its folder must exist.
    frames: [H, W, 3] uint8 arrays of one even size (yuv420p halves the chroma resolution).
    fps: frame rate.
    crf: x264 constant rate factor (0 lossless luma, 18 visually near-lossless, 23 default).
    audio_from: a media file whose first audio stream is copied into the output, interleaved with
      the video (a file without audio gives a video without audio). The whole stream by default,
      however long the video is.
    audio_range: (start, stop) seconds of `audio_from` to copy instead, moved to start at 0: for a
      video made of source frames [a, b) at rate fps, (a / fps, b / fps).
    metadata: container tags {key: value}, e.g. `SYNTHETIC_TAGS` for an edited video.

  Returns:
    The number of frames written.

  Raises:
    ValueError: a frame of another size or type, or an odd size, or an empty audio range.

  The video is written to a temporary file beside `path` and renamed over it when complete: on an
  error, or if the process is killed, whatever was at `path` before is left as it was.
    VideoError: `audio_from` is missing, empty or unreadable.
  """
  path = os.fspath(path)
  if audio_range is not None and audio_from is None:
    raise ValueError(f"{path}: audio_range {audio_range} given without audio_from")
  soundtrack = _Soundtrack(audio_from, audio_range) if audio_from is not None else None
  count = 0
  try:
    with files.atomic_path(path) as temporary, av.open(temporary, mode="w") as container:
      if metadata:
        _write_tags(container, metadata)
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
          if soundtrack is not None:
            soundtrack.add_to(container)
        elif frame.shape[:2] != (stream.height, stream.width):
          raise ValueError(f"{path}: frame {count} is {frame.shape[1]}x{frame.shape[0]}, "
                           f"the video is {stream.width}x{stream.height}")
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
          container.mux(packet)
        count += 1
        if soundtrack is not None:
          soundtrack.mux_until(container, count / fps)
      if stream is None:
        raise ValueError(f"{path}: no frames to write")
      for packet in stream.encode():
        container.mux(packet)
      if soundtrack is not None:
        soundtrack.mux_until(container, math.inf)
  finally:
    if soundtrack is not None:
      soundtrack.close()
  return count
