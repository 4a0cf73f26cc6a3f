"""The real-video job, `python -m data_prep.build`, end to end with the real MediaPipe models.

Inputs are mp4 files the tests encode from synthetic renders (whose true pose is known), broken
files, a faceless video and a too-short one, and, where present, the shared real clips.
"""

import json
import os

import ml_collections
import numpy as np
import pytest

from data_prep import build, learn_face_model
from tfvgan_jax import face3d, render
from tfvgan_jax.data import pipeline, records, synthetic
from tfvgan_jax.prep import clip, detect, landmarks, video

SIZE = 128
FRAMES = 12


@pytest.fixture(scope="module")
def model():
  return face3d.load_model("procedural:low")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, model):
  """Three synthetic talking heads, a corrupt file, an empty file, a faceless and a too-short video."""
  folder = tmp_path_factory.mktemp("videos")
  truth = {}
  for seed in range(3):
    true = synthetic.sample_video(model, 100 + seed, FRAMES, 256)
    frames = synthetic.render_frames(model, true.appearance, true.id_coeffs, true.exp_coeffs, true.cameras, 256)
    path = folder / "people" / f"person{seed}.mp4"
    path.parent.mkdir(exist_ok=True)
    video.write_video(path, frames, fps=25)
    truth[f"people/person{seed}"] = true
  (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
  (folder / "empty.mp4").write_bytes(b"")
  video.write_video(folder / "wall.mp4", [np.full((128, 128, 3), 90, np.uint8)] * 6, fps=25)
  short = synthetic.sample_video(model, 7, 3, 256)
  video.write_video(folder / "short.mp4", synthetic.render_frames(
      model, short.appearance, short.id_coeffs, short.exp_coeffs, short.cameras, 256), fps=25)
  return folder, truth


def run_job(folder, out, mediapipe_models, *extra):
  return build.main([f"--input={folder}/**/*.mp4", f"--out={out}", "--face_model=procedural:low", f"--size={SIZE}",
                     f"--detector={mediapipe_models.detector}", f"--landmarks={mediapipe_models.landmarks}",
                     "--runner=DirectRunner", *extra])


def test_job_writes_records_and_reports_every_input(tmp_path, corpus, model, mediapipe_models, capsys):
  folder, truth = corpus
  assert run_job(folder, tmp_path, mediapipe_models) == 0
  summary = json.loads((tmp_path / build.SUMMARY_FILE).read_text())
  assert summary["videos_in"] == 7
  assert summary["written"] == 3
  assert summary["skipped"] == {"empty_file": 1, "no_face": 1, "too_short": 1, "unreadable": 1}
  assert summary["frames"] == 3 * FRAMES and summary["fraction_fitted"] == 1.0
  assert 0 < summary["mean_residual"] < 0.05 * SIZE
  assert len(summary["videos"]) == 7 and summary["reused"] == 0
  printed = capsys.readouterr().out
  assert "corrupt: skipped, unreadable" in printed and '"videos_in": 7' in printed

  frames = records.open_dataset(summary["dataset"])
  records.check_model(frames, model)
  index = records.video_index(frames)
  assert sorted(index) == sorted(truth)
  for video_id, true in truth.items():
    rows = [frames[int(i)] for i in index[video_id]]
    assert [int(r["frame_index"]) for r in rows] == list(range(FRAMES))
    assert rows[0]["image"].shape == (SIZE, SIZE, 3)
    ids = np.stack([r["id_coeffs"] for r in rows])
    np.testing.assert_array_equal(ids, np.broadcast_to(ids[0], ids.shape))  # one identity per clip
    cameras = np.stack([r["camera"] for r in rows])
    error = np.degrees(np.abs(cameras[:, :3] - true.cameras[:, :3]))
    assert error[:, 1].max() < 8.0, (video_id, error)  # yaw, through MediaPipe's landmarks of a render
    assert np.all(np.isfinite([r["fit_residual"] for r in rows]))

  config = ml_collections.ConfigDict({
      "videos": summary["dataset"], "images": "", "sampling": "intra_inter", "sigma": 0.5, "frame_gap": 1,
      "batch_size": 4, "seed": 0, "num_workers": 0, "num_threads": 1, "prefetch": 1})
  batch = next(iter(pipeline.training_dataset(config, model, process_index=0, process_count=1)))
  assert batch["branch"].shape == (4,)


def test_rerun_reuses_finished_videos(tmp_path, corpus, mediapipe_models, monkeypatch):
  folder, _ = corpus
  assert run_job(folder, tmp_path, mediapipe_models) == 0
  first = json.loads((tmp_path / build.SUMMARY_FILE).read_text())

  def no_tracking(*args, **kwargs):
    raise AssertionError("a finished or cached video was tracked again")

  monkeypatch.setattr(clip, "track_video", no_tracking)
  assert run_job(folder, tmp_path, mediapipe_models) == 0
  second = json.loads((tmp_path / build.SUMMARY_FILE).read_text())
  assert second["reused"] == 3
  for key in ("videos_in", "written", "skipped", "frames", "mean_residual"):
    assert second[key] == first[key]


def test_a_new_face_model_refits_from_the_cached_tracks(tmp_path, corpus, mediapipe_models, monkeypatch):
  folder, _ = corpus
  assert run_job(folder, tmp_path, mediapipe_models, "--max_frames=10") == 0
  face3d.save(face3d.procedural_model(seed=1, detail="low"), tmp_path / "other.npz")
  monkeypatch.setattr(clip, "track_video", lambda *a, **k: pytest.fail("tracked again"))
  assert build.main([f"--input={folder}/**/*.mp4", f"--out={tmp_path}", f"--face_model={tmp_path / 'other.npz'}",
                     f"--size={SIZE // 2}", "--max_frames=10", f"--detector={mediapipe_models.detector}",
                     f"--landmarks={mediapipe_models.landmarks}"]) == 0
  summary = json.loads((tmp_path / build.SUMMARY_FILE).read_text())
  assert summary["written"] == 3 and summary["reused"] == 0 and summary["frames"] == 30


def test_job_errors_name_the_problem(tmp_path, mediapipe_models, capsys):
  assert build.main([f"--input={tmp_path}/*.mp4", f"--out={tmp_path}/out", "--face_model=procedural:low",
                     f"--detector={mediapipe_models.detector}", f"--landmarks={mediapipe_models.landmarks}"]) == 1
  assert "no file matches" in capsys.readouterr().err
  assert build.main([f"--input={tmp_path}/*.mp4", f"--out={tmp_path}/out", f"--face_model={tmp_path}/none.npz",
                     f"--detector={mediapipe_models.detector}", f"--landmarks={mediapipe_models.landmarks}"]) == 1
  assert "none.npz" in capsys.readouterr().err
  assert build.main([f"--input={tmp_path}/*.mp4", f"--out={tmp_path}/out", "--face_model=procedural:low",
                     f"--detector={tmp_path}/missing.tflite", f"--landmarks={mediapipe_models.landmarks}"]) == 1
  assert "missing.tflite" in capsys.readouterr().err


def test_video_ids_are_paths_below_the_common_folder():
  ids = build.video_ids(["/d/vox/id1/a/00001.mp4", "/d/vox/id1/a/00002.mp4", "/d/vox/id2/b/00001.mp4"])
  assert ids == {"/d/vox/id1/a/00001.mp4": "id1/a/00001", "/d/vox/id1/a/00002.mp4": "id1/a/00002",
                 "/d/vox/id2/b/00001.mp4": "id2/b/00001"}
  assert build.video_ids(["/x/y/clip.mp4"]) == {"/x/y/clip.mp4": "clip"}
  assert build.prepared_name("id1/a/00001") != build.prepared_name("id1_a/00001")


def test_local_runs_never_fetch_beams_prism_binary():
  from apache_beam.options.pipeline_options import PipelineOptions
  from apache_beam.runners.portability.fn_api_runner import FnApiRunner
  for args in ([], ["--runner=DirectRunner", "--direct_num_workers=2"]):
    assert isinstance(build.local_runner(PipelineOptions(args)), FnApiRunner)
  assert build.local_runner(PipelineOptions(["--runner=DataflowRunner"])) is None


def test_track_cache_skips_decoding_on_a_second_call(tmp_path, corpus, mediapipe_models):
  folder, _ = corpus
  detector = detect.FaceDetector(mediapipe_models.detector)
  calls = []

  def counting(image):
    calls.append(1)
    return detector(image)

  mesh = landmarks.FaceMesh(mediapipe_models.landmarks)
  settings = clip.PrepSettings(max_frames=10)
  first = clip.cached_track(folder / "people" / "person0.mp4", counting, mesh, settings, tmp_path)
  assert calls
  calls.clear()
  second = clip.cached_track(folder / "people" / "person0.mp4", counting, mesh, settings, tmp_path)
  assert not calls
  np.testing.assert_array_equal(first.points, second.points)
  counts = []
  for _ in range(2):
    with pytest.raises(clip.SkippedVideo, match="no face") as skipped:
      clip.cached_track(folder / "wall.mp4", counting, mesh, settings, tmp_path)
    assert skipped.value.reason == "no_face"
    counts.append(len(calls))
  assert counts == [6, 6]  # the detector looked at each of the 6 frames once; the skip was cached


def test_shared_clips_are_fitted(tmp_path, testdata, mediapipe_models):
  folder = tmp_path / "clips"
  folder.mkdir()
  for name in ("d10", "d12", "d19"):
    os.symlink(testdata / "videos" / f"{name}.mp4", folder / f"{name}.mp4")
  assert run_job(folder, tmp_path / "out", mediapipe_models, "--max_frames=40") == 0
  summary = json.loads((tmp_path / "out" / build.SUMMARY_FILE).read_text())
  assert summary["written"] == 3 and summary["fraction_fitted"] >= 0.95
  assert summary["mean_residual_interocular"] < 0.04

  learned = tmp_path / "learned.npz"
  assert learn_face_model.main([f"--input={folder}/*.mp4", f"--out={learned}", "--max_frames=40",
                                f"--cache={tmp_path / 'out' / 'tracks'}", f"--detector={mediapipe_models.detector}",
                                f"--landmarks={mediapipe_models.landmarks}"]) == 0
  assert build.main([f"--input={folder}/*.mp4", f"--out={tmp_path / 'refit'}", f"--face_model={learned}",
                     "--max_frames=40", f"--size={SIZE}", f"--detector={mediapipe_models.detector}",
                     f"--landmarks={mediapipe_models.landmarks}"]) == 0
  refit = json.loads((tmp_path / "refit" / build.SUMMARY_FILE).read_text())
  assert refit["written"] == 3 and refit["mean_residual_interocular"] < 0.02


def test_learned_face_model_is_accepted_by_the_job_the_fitter_and_the_renderer(tmp_path, corpus, mediapipe_models):
  folder, _ = corpus
  out = tmp_path / "learned.npz"
  assert learn_face_model.main([f"--input={folder}/people/*.mp4", f"--out={out}", "--num_id=8", "--num_exp=4",
                                f"--detector={mediapipe_models.detector}",
                                f"--landmarks={mediapipe_models.landmarks}"]) == 0
  learned = face3d.load(out)
  assert learned.num_vertices == 468 and learned.num_id == 2 and learned.num_exp == 4  # 3 clips: 2 identity axes
  assert clip.on_mesh_topology(learned)
  assert build.main([f"--input={folder}/people/*.mp4", f"--out={tmp_path / 'job'}", f"--face_model={out}",
                     f"--size={SIZE}", f"--detector={mediapipe_models.detector}",
                     f"--landmarks={mediapipe_models.landmarks}"]) == 0
  summary = json.loads((tmp_path / "job" / build.SUMMARY_FILE).read_text())
  assert summary["written"] == 3 and summary["mean_residual_interocular"] < 0.02
  frames = records.open_dataset(summary["dataset"])
  first = frames[0]
  screen = face3d.project(face3d.vertices(learned, first["id_coeffs"], first["exp_coeffs"]),
                          face3d.Camera.from_vector(first["camera"]))
  mask = np.asarray(render.rasterize(screen, learned.triangles, SIZE, SIZE).mask)
  assert 0.1 < mask.mean() < 0.9
  assert learn_face_model.main([f"--input={folder}/wall.mp4", f"--out={tmp_path / 'x.npz'}",
                                f"--detector={mediapipe_models.detector}",
                                f"--landmarks={mediapipe_models.landmarks}"]) == 1
