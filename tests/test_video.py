"""Video decoding and encoding (PyAV): round trips, streaming, every kind of bad input, and the
output side of editing (soundtrack copied from the source, synthetic-video tags)."""

import itertools
import os
import signal
import subprocess
import sys

import av
import numpy as np
import pytest

from tfvgan_jax import face3d
from tfvgan_jax.data import synthetic
from tfvgan_jax.prep import VideoError, probe, read_frames, write_video
from tfvgan_jax.prep.video import SYNTHETIC_TAGS, is_marked_synthetic


@pytest.fixture(scope="module")
def clip():
  model = face3d.procedural_model(detail="low")
  video = synthetic.sample_video(model, seed=3, num_frames=12, size=64)
  return synthetic.render_frames(model, video.appearance, video.id_coeffs, video.exp_coeffs, video.cameras, 64)


def psnr(a, b):
  return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64))**2))


def test_round_trip_keeps_frames_order_and_rate(tmp_path, clip):
  path = tmp_path / "clip.mp4"
  assert write_video(path, iter(clip), fps=25) == len(clip)
  info = probe(path)
  assert (info.width, info.height, info.num_frames) == (64, 64, len(clip))
  assert info.fps == pytest.approx(25.0)
  frames = list(read_frames(path))
  assert [f.index for f in frames] == list(range(len(clip)))
  np.testing.assert_allclose([f.time for f in frames], np.arange(len(clip)) / 25.0, atol=1e-6)
  for frame, source in zip(frames, clip):
    assert frame.image.shape == (64, 64, 3) and frame.image.dtype == np.uint8
    assert psnr(frame.image, source) > 30.0
  # Frames stay in order: each decoded frame is nearest its own source frame.
  marked = clip.copy()
  for i in range(len(marked)):
    marked[i, 8 * (i // 8):8 * (i // 8) + 8, 8 * (i % 8):8 * (i % 8) + 8] = 255
  write_video(path, marked, fps=25)
  for i, frame in enumerate(read_frames(path)):
    errors = [np.mean(np.abs(frame.image.astype(int) - s.astype(int))) for s in marked]
    assert int(np.argmin(errors)) == i


def test_ranges_and_streaming(tmp_path, clip):
  path = tmp_path / "clip.mp4"
  write_video(path, clip, fps=30)
  assert [f.index for f in read_frames(path, start=2, stop=9, step=3)] == [2, 5, 8]
  # A generator: taking two frames decodes no more than needed and closes the file.
  assert [f.index for f in itertools.islice(read_frames(path), 2)] == [0, 1]
  with pytest.raises(ValueError, match="invalid frame range"):
    list(read_frames(path, start=5, stop=2))


def test_bad_inputs_name_the_file(tmp_path, clip):
  with pytest.raises(VideoError, match=r"missing\.mp4: no such file"):
    probe(tmp_path / "missing.mp4")
  empty = tmp_path / "empty.mp4"
  empty.write_bytes(b"")
  with pytest.raises(VideoError, match=r"empty\.mp4: the file is empty"):
    list(read_frames(empty))
  garbage = tmp_path / "garbage.mp4"
  garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
  with pytest.raises(VideoError, match=r"garbage\.mp4: not a readable video"):
    probe(garbage)
  whole = tmp_path / "whole.mp4"
  write_video(whole, clip, fps=25)
  truncated = tmp_path / "truncated.mp4"
  truncated.write_bytes(whole.read_bytes()[:len(whole.read_bytes()) // 3])
  with pytest.raises(VideoError, match=r"truncated\.mp4"):
    list(read_frames(truncated))


def test_writer_refuses_bad_frames_and_leaves_no_file(tmp_path, clip):
  odd = tmp_path / "odd.mp4"
  with pytest.raises(ValueError, match="even frame size"):
    write_video(odd, [np.zeros((63, 64, 3), np.uint8)], fps=25)
  assert not odd.exists()
  mixed = tmp_path / "mixed.mp4"
  with pytest.raises(ValueError, match="frame 1 is 32x32"):
    write_video(mixed, [clip[0], np.zeros((32, 32, 3), np.uint8)], fps=25)
  assert not mixed.exists()
  with pytest.raises(ValueError, match="no frames"):
    write_video(tmp_path / "none.mp4", [], fps=25)
  assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_file_that_was_there(tmp_path, clip):
  """Before: the error path removed `path`, even a file the writer never wrote (a user's notes)."""
  notes = tmp_path / "notes.txt"
  notes.write_text("my notes")
  with pytest.raises(ValueError):
    write_video(notes, [clip[0], np.zeros((32, 32, 3), np.uint8)], fps=25)
  assert notes.read_text() == "my notes"
  earlier = tmp_path / "result.mp4"
  write_video(earlier, clip, fps=25)
  before = earlier.read_bytes()

  def dies_midway():
    yield clip[0]
    raise KeyboardInterrupt  # as a kill would stop the writer: the earlier result must survive

  with pytest.raises(KeyboardInterrupt):
    write_video(earlier, dies_midway(), fps=25)
  assert earlier.read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "result.mp4"]


def test_reads_a_real_clip(testdata):
  path = testdata / "videos" / "d10.mp4"
  info = probe(path)
  assert (info.width, info.height) == (512, 512) and info.fps == pytest.approx(30.0, abs=0.1)
  frames = list(read_frames(path, stop=5))
  assert len(frames) == 5 and frames[0].image.shape == (512, 512, 3)
  assert frames[0].image.std() > 10  # real content, not a blank frame


# Editing output: the soundtrack of the source, copied; the container tagged synthetic.

RATE = 44100  # audio samples per second
AAC_FRAME = 1024  # samples per AAC packet


def tone_track(seconds=1.0):
  """[n] float32: silence for the first half, a 440 Hz tone after, so a copied span shows where it came from."""
  t = np.arange(int(RATE * seconds)) / RATE
  return np.where(t >= seconds / 2, 0.5 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)


def write_source(path, frames, fps, audio=None, codec="aac"):
  """A source video as a camera would give it: H.264 video and, where given, mono audio in `codec`."""
  with av.open(str(path), "w") as container:
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    sound = None if audio is None else container.add_stream(codec, rate=RATE, layout="mono")
    for frame in frames:
      container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(video.encode())
    if sound is not None:
      layout = "u8" if codec == "pcm_u8" else "fltp"
      for start in range(0, len(audio), AAC_FRAME):
        chunk = audio[start:start + AAC_FRAME]
        if layout == "u8":
          chunk = np.round((chunk + 1) * 127.5).astype(np.uint8)
        frame = av.AudioFrame.from_ndarray(chunk[None], format=layout, layout="mono")
        frame.sample_rate, frame.pts = RATE, start
        container.mux(sound.encode(frame))
      container.mux(sound.encode())


def decoded_audio(path):
  """[n] float32 samples of the first audio stream of `path` (mono), or None without one."""
  with av.open(str(path)) as container:
    if not container.streams.audio:
      return None
    return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(container.streams.audio[0])])


@pytest.fixture(scope="module")
def frames25():
  """[25, 48, 64, 3] uint8: one second at 25 fps, each frame a different grey with a moving bar."""
  frames = np.repeat(np.arange(25, dtype=np.uint8)[:, None, None, None] * 8, 48, axis=1)
  frames = np.repeat(np.repeat(frames, 64, axis=2), 3, axis=3)
  for i in range(25):
    frames[i, :, 2 * i:2 * i + 4] = 255
  return frames


@pytest.mark.parametrize("codec", ["aac", "pcm_u8"])
def test_edited_video_keeps_the_soundtrack_and_is_tagged(tmp_path, frames25, codec):
  # aac goes into the mp4 as it is; pcm_u8 (from a Matroska source) cannot, and is re-encoded to AAC.
  source = tmp_path / ("source.mp4" if codec == "aac" else "source.mkv")
  write_source(source, frames25, 25, tone_track(), codec)
  assert probe(source).has_audio
  edited = tmp_path / "edited.mp4"
  assert write_video(edited, 255 - frames25, fps=25, audio_from=source, metadata=SYNTHETIC_TAGS) == 25
  info = probe(edited)
  assert (info.width, info.height, info.num_frames, info.has_audio) == (64, 48, 25, True)
  assert info.fps == pytest.approx(25.0)
  with av.open(str(edited)) as container:
    assert container.streams.audio[0].codec_context.name == "aac"
    for key, value in SYNTHETIC_TAGS.items():
      assert container.metadata[key] == value
    # Audio packets are interleaved with the video in the file, not all after it, so players and
    # streaming readers get both as they go.
    kinds = [packet.stream.type for packet in container.demux() if packet.size]
  last_video = len(kinds) - 1 - kinds[::-1].index("video")
  assert kinds[:last_video].count("audio") > 0.6 * kinds.count("audio")
  assert is_marked_synthetic(edited) and not is_marked_synthetic(source)
  copied, original = decoded_audio(edited), decoded_audio(source)
  assert abs(len(copied) - len(original)) <= AAC_FRAME
  half = RATE // 2
  assert np.sqrt(np.mean(copied[:half - AAC_FRAME]**2)) < 0.01  # the silence stays first ...
  assert np.sqrt(np.mean(copied[half + AAC_FRAME:RATE]**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_audio_range_copies_only_that_span(tmp_path, frames25):
  source = tmp_path / "source.mp4"
  write_source(source, frames25, 25, tone_track())
  part = tmp_path / "part.mp4"
  # Frames [15, 25) of the source: 0.6 s to 1.0 s, all of it in the tone.
  write_video(part, frames25[15:], fps=25, audio_from=source, audio_range=(15 / 25, 25 / 25))
  audio = decoded_audio(part)
  assert abs(len(audio) - 0.4 * RATE) <= AAC_FRAME
  assert np.sqrt(np.mean(audio[AAC_FRAME:-AAC_FRAME]**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
  with av.open(str(part)) as container:
    start = container.streams.audio[0].start_time * container.streams.audio[0].time_base
  assert 0 <= start < AAC_FRAME / RATE  # shifted to the start of the new video
  silent = tmp_path / "silent_part.mp4"
  write_video(silent, frames25[:10], fps=25, audio_from=source, audio_range=(0.0, 0.4))
  assert np.sqrt(np.mean(decoded_audio(silent)**2)) < 0.01
  with pytest.raises(ValueError, match="start < stop"):
    write_video(tmp_path / "bad.mp4", frames25, fps=25, audio_from=source, audio_range=(0.5, 0.5))
  with pytest.raises(ValueError, match="without audio_from"):
    write_video(tmp_path / "bad.mp4", frames25, fps=25, audio_range=(0.0, 0.5))


def test_source_without_audio_and_missing_source(tmp_path, frames25):
  mute = tmp_path / "mute.mp4"
  write_source(mute, frames25, 25)
  edited = tmp_path / "edited.mp4"
  write_video(edited, frames25, fps=25, audio_from=mute)
  assert not probe(edited).has_audio and decoded_audio(edited) is None
  assert not is_marked_synthetic(edited)
  with pytest.raises(VideoError, match=r"nowhere\.mp4: no such file"):
    write_video(tmp_path / "out.mp4", frames25, fps=25, audio_from=tmp_path / "nowhere.mp4")
  assert not (tmp_path / "out.mp4").exists()


def test_edits_a_real_clip_with_its_sound(tmp_path, testdata):
  source = testdata / "videos" / "d11.mp4"  # 25 fps, AAC stereo at 44.1 kHz
  edited = tmp_path / "edited.mp4"
  frames = (255 - frame.image for frame in read_frames(source, start=50, stop=100))
  write_video(edited, frames, fps=25, audio_from=source, audio_range=(50 / 25, 100 / 25), metadata=SYNTHETIC_TAGS)
  info = probe(edited)
  assert (info.width, info.height, info.num_frames, info.has_audio) == (512, 512, 50, True)
  assert is_marked_synthetic(edited)
  with av.open(str(edited)) as container:
    stream = container.streams.audio[0]
    samples = sum(frame.samples for frame in container.decode(stream))
    assert abs(samples - 2.0 * stream.codec_context.sample_rate) <= AAC_FRAME


def test_kill_9_mid_write_leaves_the_earlier_video(tmp_path, clip):
  """Before: the mp4 was written in place, so a killed edit left an unreadable file there."""
  earlier = tmp_path / "result.mp4"
  write_video(earlier, clip, fps=25)
  before = earlier.read_bytes()
  script = (
      "import sys, time, numpy as np\n"
      "from tfvgan_jax.prep import write_video\n"
      "def frames():\n"
      "  for k in range(10000):\n"
      "    yield np.full((64, 64, 3), k % 256, np.uint8)\n"
      "    if k == 5: print('writing', flush=True)\n"
      "    time.sleep(0.01)\n"
      "write_video(sys.argv[1], frames(), fps=25)\n")
  process = subprocess.Popen([sys.executable, "-c", script, str(earlier)], stdout=subprocess.PIPE, text=True)
  try:
    assert process.stdout.readline().strip() == "writing"
    os.kill(process.pid, signal.SIGKILL)
  finally:
    process.kill()
    process.wait(timeout=30)
  assert earlier.read_bytes() == before
  assert len(list(read_frames(earlier))) == len(clip)
