"""The synthetic talking-head corpus: deterministic, plausible motion, renders what it records."""

import numpy as np
import pytest

from tfvgan_jax import face3d, render
from tfvgan_jax.data import synthetic

SIZE = 64


@pytest.fixture(scope="module")
def model():
  return face3d.procedural_model(detail="low")


@pytest.fixture(scope="module")
def video(model):
  return synthetic.sample_video(model, seed=3, num_frames=150, size=SIZE)


def test_same_seed_same_video_and_frames(model):
  a = synthetic.sample_video(model, seed=5, num_frames=6, size=SIZE)
  b = synthetic.sample_video(model, seed=5, num_frames=6, size=SIZE)
  c = synthetic.sample_video(model, seed=6, num_frames=6, size=SIZE)
  for x, y in zip(a[:3], b[:3]):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(a.appearance.background, b.appearance.background)
  assert not np.array_equal(a.id_coeffs, c.id_coeffs)
  frames_a = synthetic.render_frames(model, a.appearance, a.id_coeffs, a.exp_coeffs, a.cameras, SIZE)
  frames_b = synthetic.render_frames(model, b.appearance, b.id_coeffs, b.exp_coeffs, b.cameras, SIZE)
  assert frames_a.shape == (6, SIZE, SIZE, 3) and frames_a.dtype == np.uint8
  np.testing.assert_array_equal(frames_a, frames_b)


def test_shapes_and_coefficient_ranges(model, video):
  assert video.id_coeffs.shape == (40,) and video.exp_coeffs.shape == (150, 10) and video.cameras.shape == (150, 6)
  assert np.abs(video.id_coeffs).max() <= 2.5
  jaw = video.exp_coeffs[:, 0]
  assert jaw.min() >= 0 and jaw.max() > 0.5, "the jaw moves while talking and never closes past rest"
  blinks = video.exp_coeffs[:, 6]
  assert blinks.max() >= 2.9 and (blinks > 2.5).mean() < 0.2, "occasional full blinks"
  np.testing.assert_array_equal(video.exp_coeffs[:, 6], video.exp_coeffs[:, 7])


def test_motion_speeds_are_plausible(video):
  pose = video.cameras[:, :3]
  angular_speed = np.abs(np.diff(pose, axis=0)) * synthetic.FPS  # rad/s
  assert angular_speed.max() < 1.0
  assert np.ptp(pose[:, 1]) > 0.05, "the head does move"
  drift = np.abs(np.diff(video.cameras[:, 4:], axis=0)).max()
  assert drift < 0.02 * SIZE
  assert np.all(np.abs(np.diff(video.cameras[:, 3])) < 0.01 * video.cameras[:, 3].mean())


def test_face_fills_a_plausible_part_of_the_frame_and_landmarks_land_on_it(model, video):
  verts = face3d.vertices(model, video.id_coeffs, video.exp_coeffs[:10])
  screen = np.asarray(face3d.project(verts, face3d.Camera.from_vector(video.cameras[:10])))
  frags = render.rasterize(screen, model.triangles, SIZE, SIZE)
  coverage = np.asarray(frags.mask).mean(axis=(1, 2))
  assert np.all((coverage > 0.2) & (coverage < 0.7))
  lmk = screen[:, np.asarray(model.landmarks), :2]
  assert np.all((lmk > 0) & (lmk < SIZE)), "all 68 landmarks inside the frame"
  rows, cols = np.floor(lmk[..., 1]).astype(int), np.floor(lmk[..., 0]).astype(int)
  on_face = np.asarray(frags.mask)[np.arange(10)[:, None], rows, cols]
  assert on_face.mean() > 0.9


def test_render_shows_the_face_over_the_background(model, video):
  frames = synthetic.render_frames(model, video.appearance, video.id_coeffs, video.exp_coeffs[:4], video.cameras[:4], SIZE)
  verts = face3d.vertices(model, video.id_coeffs, video.exp_coeffs[:4])
  screen = np.asarray(face3d.project(verts, face3d.Camera.from_vector(video.cameras[:4])))
  mask = np.asarray(render.rasterize(screen, model.triangles, SIZE, SIZE).mask)
  background = video.appearance.background
  corner = ~mask[0, :6, :6]
  assert corner.all()
  np.testing.assert_allclose(frames[0, :6, :6].astype(float), background[:6, :6].astype(float), atol=3)
  assert np.abs(frames[0][mask[0]].astype(float) - background[mask[0]].astype(float)).mean() > 10


def test_render_needs_albedo(model, video):
  with pytest.raises(ValueError, match="no albedo"):
    synthetic.render_frames(model.replace(albedo=None), video.appearance, video.id_coeffs, video.exp_coeffs[:1], video.cameras[:1], SIZE)


def test_cached_corpus_removes_a_killed_builds_staging_and_leaves_none(tmp_path, model):
  import os
  import subprocess
  import sys

  from tfvgan_jax import files
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  name = f"synthetic_v1_f2_s16_seed0_{model.name}_{face3d.content_hash(model)[:8]}"
  killed = tmp_path / files.partial_name(name).replace(f"{os.getpid()}@", f"{child.pid}@", 1)
  (killed / "synthetic").mkdir(parents=True)
  dataset = synthetic.cached_corpus(tmp_path, model, 1, 2, 16, 0, log=lambda *_: None)
  assert os.listdir(tmp_path) == [name] and dataset.exists()
  assert synthetic.cached_corpus(tmp_path, model, 1, 2, 16, 0, log=lambda *_: None) == dataset


def test_cli_checks_out_and_name_before_rendering(tmp_path):
  import pathlib
  import subprocess
  import sys
  repo = pathlib.Path(__file__).resolve().parents[1]
  (tmp_path / "file").write_text("x")
  not_a_folder = f"error: --out={tmp_path / 'file'}: is a file, not a folder"
  for flags, message in (([f"--out={tmp_path / 'file'}"], not_a_folder),
                         ([f"--out={tmp_path}", "--name=Synthetic-1"], "error: --name=Synthetic-1: dataset name"),
                         ([f"--out={tmp_path}", "--vidoes=2"], "error: Unknown command line flag 'vidoes'")):
    done = subprocess.run([sys.executable, "-m", "data_prep.synthetic", *flags], cwd=repo, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith(message), done.stderr
    assert "Traceback" not in done.stderr
  assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
