"""Video decoding and encoding (PyAV): round trips, streaming, and every kind of bad input."""

import itertools

import numpy as np
import pytest

from tfvgan_jax import face3d
from tfvgan_jax.data import synthetic
from tfvgan_jax.prep import VideoError, probe, read_frames, write_video


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


def test_reads_a_real_clip(testdata):
  path = testdata / "videos" / "d10.mp4"
  info = probe(path)
  assert (info.width, info.height) == (512, 512) and info.fps == pytest.approx(30.0, abs=0.1)
  frames = list(read_frames(path, stop=5))
  assert len(frames) == 5 and frames[0].image.shape == (512, 512, 3)
  assert frames[0].image.std() > 10  # real content, not a blank frame
