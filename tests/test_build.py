"""The real-video job, `python -m data_prep.build`, end to end with the real MediaPipe models.

Inputs are mp4 files the tests encode from synthetic renders (whose true pose is known), broken
files, a faceless video and a too-short one, and, where present, the shared real clips.
"""

import collections
import dataclasses
import itertools
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import zlib

import ml_collections
import numpy as np
import pytest
from etils import epath
from helpers import raw_records

from data_prep import build, learn_face_model
from tfvgan_jax import face3d, files, render
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


def test_each_prepared_video_is_read_once_and_the_records_are_the_single_machine_assemblys(
    tmp_path, corpus, model, mediapipe_models, monkeypatch):
  folder, _ = corpus
  path_class = type(epath.Path(tmp_path))
  reads = collections.Counter()
  opened = path_class.open  # read_bytes opens too

  def counted(self, *args, **kwargs):
    if self.parent.name == "prepared" and self.suffix == ".npz":
      reads[self.name] += 1
    return opened(self, *args, **kwargs)

  monkeypatch.setattr(path_class, "open", counted)
  for run in range(2):  # the second run reuses every prepared video
    reads.clear()
    assert run_job(folder, tmp_path, mediapipe_models, "--num_shards=2") == 0
    summary = json.loads((tmp_path / build.SUMMARY_FILE).read_text())
    assert summary["reused"] == 3 * run and summary["shards"] == 2
    assert sorted(reads.values()) == [1, 1, 1], reads
  monkeypatch.undo()

  frames = records.open_dataset(summary["dataset"])
  assert len(frames.files) == 2 and records.load_video_index(frames).records is None
  old = records.write_dataset(tmp_path / "old", "videos", build.prepared_examples(summary["videos"]), model, SIZE)
  assert raw_records(frames) == raw_records(records.open_dataset(old))


def test_local_worker_threads_write_the_records_of_one_worker(tmp_path, corpus, model, mediapipe_models, monkeypatch):
  """Two worker threads of one process (the fastest local mode on a small machine, see README)
  prepare videos concurrently, each with its own detector, landmarker and fits: the records are
  those of a single worker. Each worker prepares one of the groups of about equal frames that
  `balanced_groups` makes from the videos' headers."""
  folder, _ = corpus
  assert run_job(folder, tmp_path / "one", mediapipe_models) == 0
  workers = collections.defaultdict(set)
  process = build.PrepareVideo.process

  def recorded(self, element):
    workers[threading.get_ident()].add(element[0])
    yield from process(self, element)

  monkeypatch.setattr(build.PrepareVideo, "process", recorded)
  assert run_job(folder, tmp_path / "threads", mediapipe_models, "--direct_num_workers=2",
                 "--direct_running_mode=multi_threading") == 0
  monkeypatch.undo()
  inputs = build.find_inputs(f"{folder}/**/*.mp4")
  ids = build.video_ids(inputs)
  settings = build.JobSettings(out=str(tmp_path / "fresh"), face_model="procedural:low", detector="", landmarks="",
                               prep=clip.PrepSettings(image_size=SIZE), model_hash=face3d.content_hash(model))
  costs = build.video_costs(inputs, ids, settings)
  assert costs == [0, 0, FRAMES, FRAMES, FRAMES, 3, 6]  # corrupt, empty, people/*, short, wall
  expected = sorted(sorted(inputs[i] for i in group) for group in build.balanced_groups(costs, 2))
  assert sorted(sorted(paths) for paths in workers.values()) == expected
  # Videos an earlier run prepared with the same settings cost nothing.
  rerun = build.video_costs(inputs, ids, dataclasses.replace(settings, out=str(tmp_path / "one")))
  assert rerun == [0, 0, 0, 0, 0, 3, 6]  # short and wall were skipped, so not prepared
  one, threads = (json.loads((tmp_path / name / build.SUMMARY_FILE).read_text()) for name in ("one", "threads"))
  assert threads["written"] == one["written"] == 3 and threads["frames"] == one["frames"]
  assert raw_records(records.open_dataset(threads["dataset"])) == raw_records(records.open_dataset(one["dataset"]))


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


def test_balanced_groups_split_the_cost_evenly_within_grahams_bound():
  """Against a brute-force best split of random costs: every item in exactly one group, no empty
  group, and the largest group's cost at most (4/3 - 1/(3 m)) of the best split's largest."""
  rng = np.random.default_rng(0)
  for _ in range(200):
    items, count = int(rng.integers(1, 9)), int(rng.integers(1, 4))
    costs = rng.integers(0, 500, items).astype(float).tolist()
    groups = build.balanced_groups(costs, count)
    assert sorted(i for group in groups for i in group) == list(range(items))
    assert len(groups) == min(count, items) and all(groups)
    best = min(max(sum(c for c, g in zip(costs, assign) if g == k) for k in range(count))
               for assign in itertools.product(range(count), repeat=items))
    largest = max(sum(costs[i] for i in group) for group in groups)
    assert largest <= (4 / 3 - 1 / (3 * count)) * best + 1e-9, (costs, count, groups)
  assert build.balanced_groups([5.0] * 7, 3) == [[0, 3, 6], [1, 4], [2, 5]]  # equal costs: counts within one
  with pytest.raises(ValueError, match="count must be >= 1"):
    build.balanced_groups([1.0], 0)


def test_video_cost_reads_the_header_and_caps_at_max_frames(corpus):
  folder, _ = corpus
  assert build.video_cost(str(folder / "people" / "person0.mp4"), 0) == FRAMES
  assert build.video_cost(str(folder / "people" / "person0.mp4"), 5) == 5
  assert build.video_cost(str(folder / "corrupt.mp4"), 0) == 0  # the worker reports it
  assert build.video_cost("gs://bucket/clip.mp4", 0) == 1  # not opened from the launching machine


def test_video_ids_are_paths_below_the_common_folder():
  ids = build.video_ids(["/d/vox/id1/a/00001.mp4", "/d/vox/id1/a/00002.mp4", "/d/vox/id2/b/00001.mp4"])
  assert ids == {"/d/vox/id1/a/00001.mp4": "id1/a/00001", "/d/vox/id1/a/00002.mp4": "id1/a/00002",
                 "/d/vox/id2/b/00001.mp4": "id2/b/00001"}
  assert build.video_ids(["/x/y/clip.mp4"]) == {"/x/y/clip.mp4": "clip"}
  assert build.prepared_name("id1/a/00001") != build.prepared_name("id1_a/00001")


def test_inputs_differing_only_by_extension_or_case_get_distinct_stable_ids():
  paths = ["/d/x.mp4", "/d/x.MP4", "/d/x.avi", "/d/y.mp4", "/d/a/x.mp4", "/d/b/x.mp4"]
  ids = build.video_ids(paths)
  assert len(set(ids.values())) == len(paths)
  assert ids["/d/y.mp4"] == "y" and ids["/d/a/x.mp4"] == "a/x"
  assert ids["/d/x.mp4"].startswith("x-") and ids["/d/x.MP4"].startswith("x-")
  assert build.video_ids(list(reversed(paths))) == ids  # the same on every run
  # A file named like another's hashed id still gets an id of its own.
  clash = ["/d/x.mp4", "/d/x.MP4", f"/d/{ids['/d/x.mp4']}.mp4"]
  assert len(set(build.video_ids(clash).values())) == 3


def dead_pid():
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


def left_by_killed_run(folder, name):
  """A `.partial-*` leftover of a killed process of this machine, in `folder`."""
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / files.partial_name(name).replace(f"{os.getpid()}@", f"{dead_pid()}@", 1)
  path.mkdir()
  (path / "beam-temp-status-0").mkdir()
  return path


def test_same_named_inputs_are_both_kept_and_a_failed_assembly_keeps_the_old_dataset(tmp_path, corpus, model,
                                                                                     mediapipe_models, monkeypatch,
                                                                                     capsys):
  folder, _ = corpus
  videos = tmp_path / "videos"
  videos.mkdir()
  shutil.copy(folder / "people" / "person0.mp4", videos / "x.mp4")
  shutil.copy(folder / "people" / "person1.mp4", videos / "x.MP4")
  os.symlink(tmp_path / "gone.mp4", videos / "broken.mp4")
  (videos / "folder.mp4").mkdir()
  out = tmp_path / "out"
  stale = [left_by_killed_run(out, "status"), left_by_killed_run(out / "prepared", "x.npz"),
           left_by_killed_run(out / "videos", "1.0.0")]
  pattern = f"--input={videos}/*"
  assert run_job(videos, out, mediapipe_models, pattern) == 0
  summary = json.loads((out / build.SUMMARY_FILE).read_text())
  assert summary["videos_in"] == 4 and summary["written"] == 2
  assert summary["skipped"] == {"missing": 1, "not_a_file": 1}
  lines = {line["path"]: line for line in summary["videos"]}
  assert lines[str(videos / "broken.mp4")]["reason"] == "missing"
  assert lines[str(videos / "folder.mp4")]["reason"] == "not_a_file"
  ids = {lines[str(videos / name)]["video_id"] for name in ("x.mp4", "x.MP4")}
  frames = records.open_dataset(summary["dataset"])
  assert sorted(records.video_index(frames)) == sorted(ids) and len(ids) == 2
  assert not any(path.exists() for path in stale)
  assert not [p for p in out.rglob(f"{files.PARTIAL_PREFIX}*")]
  before = (out / build.SUMMARY_FILE).read_text()

  examples = build.prepared_examples

  def killed_midway(statuses):
    yield from list(examples(statuses))[:3]
    raise RuntimeError("killed")

  monkeypatch.setattr(build, "prepared_examples", killed_midway)
  capsys.readouterr()
  assert run_job(videos, out, mediapipe_models, pattern) == 1
  err = capsys.readouterr().err
  assert err.strip().splitlines()[-1] == ("error: RuntimeError: killed [while running 'Shards/Write'] "
                                          "(--debug shows the traceback)")
  assert "Traceback" not in err
  assert (out / build.SUMMARY_FILE).read_text() == before
  assert sorted(records.video_index(records.open_dataset(summary["dataset"]))) == sorted(ids)
  assert not [p for p in out.rglob(f"{files.PARTIAL_PREFIX}*")]


def test_unknown_flags_are_refused_and_beam_options_pass_by_name(capsys):
  base = ["--input=x", "--out=o", "--face_model=procedural:low"]
  beam = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing",
          "--temp_location=/tmp/beam", "--project=p", "--region=r", "--save_main_session"]
  args, beam_args = build.parse_args(base + beam + ["--size=64"])
  assert beam_args == beam and args.size == 64
  for bad, message in (("--szie=64", "unknown flag --szie"), ("--siz=64", "unknown flag --siz"),
                       ("stray", "unexpected argument 'stray'"),
                       ("--direct_num_workers=two", "--direct_num_workers: invalid int value")):
    with pytest.raises(SystemExit) as exit_:
      build.main(base + [bad])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_outputs_are_checked_before_any_work(tmp_path, corpus, mediapipe_models, monkeypatch, capsys):
  folder, _ = corpus
  monkeypatch.setattr(build, "run_pipeline", lambda *a: pytest.fail("work started"))
  (tmp_path / "file").write_text("x")
  inside = tmp_path / "out" / "prepared"
  inside.mkdir(parents=True)
  shutil.copy(folder / "wall.mp4", inside / "wall.mp4")
  videos = f"--input={folder}/*.mp4"
  cases = {
      (videos, f"--out={tmp_path / 'file'}"): f"error: --out={tmp_path / 'file'}: is a file, not a folder",
      (videos, f"--out={tmp_path / 'new'}", "--name=My-Videos"): "error: --name=My-Videos: dataset name",
      (f"--input={inside}/*.mp4", f"--out={tmp_path / 'out'}"): f"holds the input {inside / 'wall.mp4'}",
  }
  for flags, message in cases.items():
    assert build.main([*flags, "--face_model=procedural:low", f"--detector={mediapipe_models.detector}",
                       f"--landmarks={mediapipe_models.landmarks}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
  assert not (tmp_path / "new").exists()
  monkeypatch.setattr(clip, "track_video", lambda *a, **k: pytest.fail("work started"))
  wall = folder / "wall.mp4"
  for out, message in ((wall, f"error: --out={wall}: is also an input ({wall})"),
                       (tmp_path / "none" / "m.npz", f"error: --out={tmp_path / 'none' / 'm.npz'}: its folder")):
    assert learn_face_model.main([f"--input={folder}/*.mp4", f"--out={out}", f"--detector={mediapipe_models.detector}",
                                  f"--landmarks={mediapipe_models.landmarks}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
  with pytest.raises(ValueError, match="My-Videos"):
    build.main([f"--input={folder}/*.mp4", f"--out={tmp_path / 'new'}", "--name=My-Videos",
                "--face_model=procedural:low", "--debug"])


def truncated_copy(source, path):
  data = source.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  return path


def test_a_truncated_video_keeps_its_frames_and_is_reported(tmp_path, testdata, mediapipe_models, capsys):
  folder = tmp_path / "clips"
  folder.mkdir()
  # d20's index sits at the front of the file, so half of it still opens: the container declares
  # 175 frames, 81 decode.
  truncated_copy(testdata / "videos" / "d20.mp4", folder / "cut.mp4")
  assert video.probe(folder / "cut.mp4").num_frames == 175
  assert run_job(folder, tmp_path / "out", mediapipe_models) == 0
  summary = json.loads((tmp_path / "out" / build.SUMMARY_FILE).read_text())
  (line,) = summary["videos"]
  assert summary["written"] == 1 and summary["truncated"] == 1
  assert line["truncated"] and line["frames_declared"] == 175 and 0 < line["frames_decoded"] < 175
  assert line["frames"] > 0.9 * line["frames_decoded"]  # the frames that decoded are kept
  assert f"truncated: decoded {line['frames_decoded']} of the 175 frames" in line["note"]
  assert "truncated: decoded" in capsys.readouterr().out


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


def tiny_png_claiming(width, height):
  """A few bytes of PNG whose header declares width x height pixels."""
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_a_huge_picture_is_refused_by_its_header(tmp_path):
  path = tmp_path / "huge.png"
  path.write_bytes(tiny_png_claiming(20000, 20000))
  for read in (clip.read_image, lambda p: clip.track_image(p, pytest.fail, pytest.fail)):
    with pytest.raises(clip.SkippedVideo, match="400000000 pixels") as skipped:
      read(path)
    assert skipped.value.reason == "too_large" and str(path) in str(skipped.value)
  path.write_bytes(tiny_png_claiming(10000, 10000))  # above the limit, below PIL's own refusal
  with pytest.raises(clip.SkippedVideo, match="10000x10000 \\(100 megapixels\\)") as skipped:
    clip.read_image(path)
  assert skipped.value.reason == "too_large"
  (tmp_path / "folder.png").mkdir()
  with pytest.raises(clip.SkippedVideo, match="folder") as skipped:
    clip.read_image(tmp_path / "folder.png")
  assert skipped.value.reason == "not_a_file"


def test_a_damaged_track_cache_entry_is_made_again(tmp_path, caplog):
  wall = tmp_path / "wall.mp4"
  video.write_video(wall, [np.full((64, 64, 3), 90, np.uint8)] * 4, fps=25)
  calls = []

  def no_faces(image):
    calls.append(1)
    return []

  settings = clip.PrepSettings()
  cache = tmp_path / "tracks"
  entry = cache / f"{clip.track_cache_key(wall, settings, ())}.npz"
  cache.mkdir()
  entry.write_bytes(b"garbage, as a disk error or a killed copy leaves it")
  with pytest.raises(clip.SkippedVideo, match="no face"):
    clip.cached_track(wall, no_faces, None, settings, cache)
  assert len(calls) == 4 and "unreadable track cache entry" in caplog.text
  with pytest.raises(clip.SkippedVideo, match="no face"):
    clip.cached_track(wall, no_faces, None, settings, cache)
  assert len(calls) == 4  # healed: the rewritten entry is read
  assert os.listdir(cache) == [entry.name]


def test_shared_clips_are_fitted(tmp_path, testdata, mediapipe_models):
  folder = tmp_path / "clips"
  folder.mkdir()
  for name in ("d10", "d12", "d19"):
    os.symlink(testdata / "videos" / f"{name}.mp4", folder / f"{name}.mp4")
  assert run_job(folder, tmp_path / "out", mediapipe_models, "--max_frames=40") == 0
  summary = json.loads((tmp_path / "out" / build.SUMMARY_FILE).read_text())
  assert summary["written"] == 3 and summary["fraction_fitted"] >= 0.95
  assert summary["mean_residual_interocular"] < 0.04
  # The workers' shards hold the records the single-machine assembly writes (in another order).
  old = records.write_dataset(tmp_path / "old", "videos", build.prepared_examples(summary["videos"]),
                              face3d.load_model("procedural:low"), SIZE)
  assert raw_records(records.open_dataset(summary["dataset"])) == raw_records(records.open_dataset(old))

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
