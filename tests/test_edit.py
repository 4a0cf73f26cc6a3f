"""Editing with a real (tiny) checkpoint: the three tasks, the output file, bad inputs.

The checkpoint is `configs/synthetic.py:tiny` trained for two steps (32 px, the session's
`tiny_run`); the inputs are synthetic talking heads encoded as mp4 (one with an audio track) and a
still picture (`edit_inputs`), faces the MediaPipe detector and landmarks find (test_build.py
checks that).
"""

import copy
import json

import av
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from edit_inputs import FRAMES
from helpers import rotation_numpy
from tfvgan_jax import edit, face3d
from tfvgan_jax.prep import fit, video

pytestmark = pytest.mark.slow  # trains or edits with a real (tiny) checkpoint


@pytest.fixture(scope="module")
def workdir(tiny_run):
  return tiny_run[1]


@pytest.fixture(scope="module")
def editor(workdir, mediapipe_models, tmp_path_factory):
  return edit.Editor(workdir, cache_dir=tmp_path_factory.mktemp("edit_cache"),
                     settings=edit.EditSettings(batch_size=4))


@pytest.fixture(scope="module")
def inputs(edit_inputs):
  return edit_inputs


def read_back(path):
  info = video.probe(path)
  frames = [f.image for f in video.read_frames(path)]
  with av.open(str(path)) as container:
    audio = len(container.streams.audio)
    metadata = dict(container.metadata)
  return info, frames, audio, metadata


@pytest.fixture(scope="module")
def swapped(editor, inputs, tmp_path_factory):
  """A swap of the inputs by the tiny checkpoint: (report, output path)."""
  out = tmp_path_factory.mktemp("swapped") / "swap.mp4"
  return editor.swap(inputs["source"], inputs["target"], out), out


def test_swap_keeps_the_targets_frames_rate_size_and_audio(swapped, inputs):
  report, out = swapped
  info, frames, audio, _ = read_back(out)
  target = video.probe(inputs["target"])
  assert report.frames == len(frames) == FRAMES and report.edited == FRAMES and report.passed_through == 0
  assert (info.width, info.height) == (target.width, target.height) and info.fps == pytest.approx(target.fps)
  assert audio == 1
  assert video.is_marked_synthetic(out)
  originals = [f.image for f in video.read_frames(inputs["target"])]
  changed = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(frames, originals)])
  assert changed > 1.0  # the face was replaced by the network's output
  corner = np.mean([np.abs(a[:8, :8].astype(int) - b[:8, :8]).mean() for a, b in zip(frames, originals)])
  assert corner < 3.0  # far from the face the target is kept


def test_a_checkpoint_trained_with_reshaded_renders_edits_with_them(editor, swapped, inputs, tmp_path):
  """render.relight reaches the editor's scene: the same checkpoint told to re-shade R swaps the
  same frames into a different output, with the target's frames kept far from the face."""
  config = copy.deepcopy(editor.checkpoint.config)
  config.render.relight = True
  relit = edit.Editor(editor.checkpoint._replace(config=config), cache_dir=editor.cache_dir,
                      settings=edit.EditSettings(batch_size=4))
  plain_report, plain_path = swapped
  report = relit.swap(inputs["source"], inputs["target"], tmp_path / "relit.mp4")
  assert report.edited == plain_report.edited == FRAMES
  plain = [f.image for f in video.read_frames(plain_path)]
  frames = [f.image for f in video.read_frames(tmp_path / "relit.mp4")]
  assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(frames, plain)]) > 0.05
  assert np.mean([np.abs(a[:8, :8].astype(int) - b[:8, :8]).mean() for a, b in zip(frames, plain)]) < 1.0


@pytest.mark.parametrize("relative", [False, True])
def test_reenact_uses_the_drivings_timeline_and_the_sources_canvas(editor, inputs, tmp_path, relative):
  report = editor.reenact(inputs["source"], inputs["driving"], tmp_path / "re.mp4", relative=relative)
  info, frames, audio, _ = read_back(tmp_path / "re.mp4")
  assert report.frames == len(frames) == FRAMES and report.edited == FRAMES
  assert info.fps == pytest.approx(30.0) and (info.width, info.height) == (128, 128)
  assert audio == 0  # the driving video has none


def test_disentangle_takes_three_inputs(editor, inputs, tmp_path):
  report = editor.disentangle(inputs["source"], inputs["expression"], inputs["target"], tmp_path / "mix.mp4")
  _, frames, audio, _ = read_back(tmp_path / "mix.mp4")
  assert report.frames == len(frames) == FRAMES and audio == 1


def test_frames_without_a_face_pass_through(editor, inputs, tmp_path):
  # Both stretches of the face are edited: the face found again after 3 frames is the same track.
  report = editor.swap(inputs["source"], inputs["gap"], tmp_path / "gap.mp4")
  assert report.frames == 17 and report.passed_through == 6 and report.edited == 11


def test_bad_inputs_are_named(editor, workdir, inputs, tmp_path):
  with pytest.raises(edit.EditError, match="--target=.*source.png.*must be a video"):
    editor.swap(inputs["source"], inputs["source"], tmp_path / "x.mp4")
  with pytest.raises(edit.EditError, match="--source=.*missing.png.*no such file"):
    editor.swap(tmp_path / "missing.png", inputs["target"], tmp_path / "x.mp4")
  with pytest.raises(edit.EditError, match="--target=.*wall.mp4.*no face"):
    editor.swap(inputs["source"], inputs["wall"], tmp_path / "x.mp4")
  with pytest.raises(edit.EditError, match="no checkpoints"):
    edit.load_checkpoint(tmp_path)
  other = tmp_path / "other.npz"
  face3d.save(face3d.procedural_model(seed=3, detail="low"), other)
  with pytest.raises(edit.EditError, match="not the face model the checkpoint was trained with"):
    edit.load_checkpoint(workdir, face_model=str(other))


def test_command_line(workdir, inputs, tmp_path, mediapipe_models, capsys):
  with flagsaver.flagsaver():
    flags.FLAGS(["edit", "--task=swap", f"--checkpoint={workdir}", f"--source={inputs['source']}",
                 f"--target={inputs['target']}", f"--out={tmp_path / 'cli.mp4'}", "--label",
                 f"--cache_dir={tmp_path / 'cache'}"])
    edit.main([])
  captured = capsys.readouterr()
  assert "8 frames, 8 edited" in captured.out
  # Progress bars on stderr: the target tracked (a fresh cache), then its frames edited.
  assert "tracking --target" in captured.err and "editing target.mp4" in captured.err and "8/8" in captured.err
  assert video.probe(tmp_path / "cli.mp4").num_frames == FRAMES
  with flagsaver.flagsaver():
    flags.FLAGS(["edit", "--task=disentangle", f"--checkpoint={workdir}", f"--out={tmp_path / 'y.mp4'}",
                 f"--identity={inputs['source']}"])
    with pytest.raises(edit.EditError, match="--expression, --appearance"):
      edit.main([])


def test_the_output_is_never_an_input_and_a_failed_edit_deletes_nothing(editor, inputs, tmp_path):
  """Before: `--out` equal to `--target` overwrote the input with a shorter video (exit 0), and a
  failed edit removed whatever file was at `--out` (a user's notes, the source picture)."""
  target = tmp_path / "c.mp4"
  target.write_bytes(inputs["target"].read_bytes())
  original = target.read_bytes()
  with pytest.raises(edit.EditError, match=r"--out=.*c\.mp4: is also an input \(--target="):
    editor.swap(inputs["source"], target, target)
  link = tmp_path / "link.mp4"
  link.symlink_to(target)
  with pytest.raises(edit.EditError, match="is also an input"):
    editor.reenact(inputs["source"], target, link)
  with pytest.raises(edit.EditError, match="is also an input"):
    editor.disentangle(inputs["source"], target, inputs["target"], str(target))
  assert target.read_bytes() == original
  notes = tmp_path / "notes.txt"
  notes.write_text("keep me")
  with pytest.raises(edit.EditError, match="no face"):
    editor.swap(inputs["source"], inputs["wall"], notes)
  assert notes.read_text() == "keep me"
  with pytest.raises(edit.EditError, match="is a folder"):
    editor.swap(inputs["source"], target, tmp_path)
  with pytest.raises(edit.EditError, match="does not exist"):
    editor.swap(inputs["source"], target, tmp_path / "no" / "such" / "folder.mp4")
  with pytest.raises(edit.EditError, match="--batch_size=0"):
    edit.EditSettings(batch_size=0)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4", "link.mp4", "notes.txt"]


def test_command_line_errors_are_one_line(workdir, inputs, tmp_path, mediapipe_models):
  """Every error of the command is one line naming the flag or file (no traceback); --debug shows it."""
  import subprocess
  import sys
  picture = tmp_path / "me.png"
  picture.write_bytes(inputs["source"].read_bytes())
  corrupt = tmp_path / "model.npz"
  corrupt.write_bytes(b"not a zip file")
  cases = [
      ([f"--source={picture}", f"--target={inputs['target']}", f"--out={picture}"], "is also an input"),
      ([f"--source={picture}", f"--target={inputs['target']}", f"--out={tmp_path / 'o.mp4'}", "--batch_size=0"],
       "--batch_size=0: must be at least 1"),
      ([f"--source={picture}", f"--target={inputs['target']}", f"--out={tmp_path / 'o.mp4'}",
        f"--face_model={corrupt}"], "model.npz"),
  ]
  for extra, expected in cases:
    run = subprocess.run([sys.executable, "-m", "tfvgan_jax.edit", "--task=swap", f"--checkpoint={workdir}",
                          "--noprogress", *extra], capture_output=True, text=True, timeout=300)
    lines = [line for line in run.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[-1].startswith("error: ") and expected in lines[-1], run.stderr
  assert picture.read_bytes() == inputs["source"].read_bytes()
  debug = subprocess.run([sys.executable, "-m", "tfvgan_jax.edit", "--task=swap", f"--checkpoint={workdir}",
                          f"--source={picture}", f"--target={inputs['target']}", f"--out={picture}", "--debug"],
                         capture_output=True, text=True, timeout=300)
  assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_per_frame_baseline_fits_every_frame_alone_and_jitters_more(editor, workdir, inputs, tmp_path):
  baseline = edit.Editor(workdir, cache_dir=tmp_path / "cache", settings=edit.EditSettings(batch_size=4, per_frame=True))
  ours, alone = editor.prepare(inputs["target"], "target"), baseline.prepare(inputs["target"], "target")
  assert alone.fitted.fit.exp_coeffs.shape == ours.fitted.fit.exp_coeffs.shape
  jitter = lambda p: float(np.sum(fit.pose_jitter(p.fitted.fit.cameras, window=3)))  # noqa: E731
  assert jitter(alone) > jitter(ours)
  report = baseline.swap(inputs["source"], inputs["target"], tmp_path / "baseline.mp4")
  assert report.frames == FRAMES


def test_tasks_on_the_shared_clips(editor, testdata, tmp_path):
  source, target, driving = testdata / "images" / "d8.jpg", testdata / "videos" / "d20.mp4", testdata / "videos" / "d11.mp4"
  for name, run, timeline in (("swap", lambda out: editor.swap(source, target, out), target),
                              ("reenact", lambda out: editor.reenact(source, driving, out, relative=True), driving),
                              ("mix", lambda out: editor.disentangle(source, driving, target, out), target)):
    report = run(tmp_path / f"{name}.mp4")
    info, expected = video.probe(tmp_path / f"{name}.mp4"), video.probe(timeline)
    assert report.frames == expected.num_frames == info.num_frames
    assert info.fps == pytest.approx(expected.fps) and info.has_audio == expected.has_audio
    assert report.edited >= 0.95 * report.frames


def test_relative_cameras_compose_the_driving_turn_with_the_source_pose():
  source = np.array([0.3, -0.2, 0.1, 2.0, 100.0, 120.0])
  driving = np.array([[0.05, 0.1, 0.0, 4.0, 60.0, 50.0],    # first frame
                      [0.05, 0.9, 0.0, 4.0, 60.0, 50.0],    # turned 0.8 rad
                      [0.4, 0.1, -0.3, 5.0, 70.0, 40.0]])   # nodded, rolled, nearer, moved
  moved = edit.relative_cameras(source, driving)
  # The first driving frame leaves the source where it is.
  np.testing.assert_allclose(moved[0], source, atol=1e-5)
  for k in (1, 2):
    expected = rotation_numpy(driving[k, :3]) @ rotation_numpy(driving[0, :3]).T @ rotation_numpy(source[:3])
    np.testing.assert_allclose(rotation_numpy(moved[k, :3]), expected, atol=1e-5)
  # Scale follows the driving face's in proportion; translation moves by the driving motion x 2 / 4.
  np.testing.assert_allclose(moved[2, 3], 2.0 * 5.0 / 4.0, rtol=1e-6)
  np.testing.assert_allclose(moved[2, 4:], [100.0 + 10.0 * 0.5, 120.0 - 10.0 * 0.5], rtol=1e-6)
  # For a frontal source and small motion this is the old Euler-offset rule; for a large turn of a
  # pitched source it is not (the offsets would not be a rigid turn).
  small = edit.relative_cameras(np.array([0, 0, 0, 2.0, 0, 0]), driving[:2] * [1, 0.05, 1, 1, 1, 1])
  np.testing.assert_allclose(small[1, :3], driving[1, :3] * [1, 0.05, 1] - driving[0, :3] * [1, 0.05, 1], atol=1e-3)
  assert np.abs(moved[1, :3] - (source[:3] + driving[1, :3] - driving[0, :3])).max() > 0.05


def test_jobs_run_in_one_process_and_a_bad_line_fails_alone(editor, workdir, inputs, tmp_path, mediapipe_models,
                                                             capsys):
  jobs = tmp_path / "jobs.jsonl"
  jobs.write_text("\n".join([
      "# two good jobs, three bad ones",
      f'{{"task": "swap", "source": "{inputs["source"]}", "target": "{inputs["target"]}", "out": "a.mp4"}}',
      '{"task": "swapp", "out": "b.mp4"}',
      f'{{"task": "reenact", "source": "{inputs["source"]}", "driving": "{inputs["wall"]}", "out": "c.mp4"}}',
      "not json",
      f'{{"task": "reenact", "identity": "{inputs["source"]}", "appearance": "{inputs["driving"]}", "out": "d.mp4", '
      '"relative": "true"}',
  ]))
  parsed, failed = edit.read_jobs(jobs)
  assert [j.line for j in parsed] == [2, 4, 6] and parsed[2].options == {"relative": True}
  assert [f.line for f in failed] == [3, 5] and "line 3: task='swapp'" in failed[0].error
  assert parsed[0].out == str(tmp_path / "a.mp4")  # relative to the jobs file's folder
  with flagsaver.flagsaver():
    flags.FLAGS(["edit", f"--checkpoint={workdir}", f"--jobs={jobs}", f"--cache_dir={tmp_path / 'cache'}",
                 "--noprogress"])
    with pytest.raises(edit.EditError, match=r"3 of 5 jobs failed \(lines 3, 4, 5: .*line 3"):
      edit.main([])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert sorted(r["line"] for r in lines) == [2, 3, 4, 5, 6]
  by_line = {r["line"]: r for r in lines}
  assert by_line[2]["ok"] and by_line[2]["edited"] == FRAMES and by_line[6]["ok"]
  assert "no face" in by_line[4]["error"] and "not JSON" in by_line[5]["error"]
  assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["a.mp4", "d.mp4"]
  # CSV with a header row, and the Python API with a list.
  table = tmp_path / "jobs.csv"
  table.write_text(f"task,source,target,out\nswap,{inputs['source']},{inputs['target']},e.mp4\nswap,,x.mp4,f.mp4\n")
  parsed, failed = edit.read_jobs(table)
  assert [j.line for j in parsed] == [2] and "line 3: task=swap needs source" in failed[0].error
  results = editor.run_jobs([{"task": "swap", "source": inputs["source"], "target": inputs["target"],
                              "out": tmp_path / "g.mp4"}, {"task": "swap", "out": tmp_path / "h.mp4"}])
  assert results[0].report.edited == FRAMES and "needs source" in results[1].error


def test_choose_the_face_of_a_two_person_clip(editor, inputs, tmp_path):
  pair = inputs["pair"]
  faces = editor.list_faces(pair, thumbnails=tmp_path / "faces")
  assert [f.number for f in faces] == [1, 2] and all(f.frames == FRAMES for f in faces)
  assert all((tmp_path / "faces" / f"pair-face{n}.png").is_file() for n in (1, 2))
  sides = ["left" if f.mean_box[2] <= 128 else "right" for f in faces]
  assert sorted(sides) == ["left", "right"]
  originals = [f.image.astype(int) for f in video.read_frames(pair)]

  def changed(path):  # per frame, mean change of the left and right halves
    return np.array([[np.abs(a[:, :128] - b[:, :128]).mean(), np.abs(a[:, 128:] - b[:, 128:]).mean()]
                     for a, b in zip((f.image for f in video.read_frames(path)), originals)])

  report = editor.swap(inputs["source"], pair, tmp_path / "all.mp4", face="all")
  assert report.edited == FRAMES and report.passed_through == 0
  assert changed(tmp_path / "all.mp4").min() > 1.0  # both people replaced in every frame
  right = sides.index("right") + 1
  editor.swap(inputs["source"], pair, tmp_path / "one.mp4", face=right)
  one = changed(tmp_path / "one.mp4")
  assert one[:, 1].min() > 1.0 and one[:, 0].max() < 3.0  # only the chosen one (re-encoding noise)
  with pytest.raises(edit.EditError, match=r"--face=3: --target=.*pair.mp4 has 2 face tracks"):
    editor.swap(inputs["source"], pair, tmp_path / "x.mp4", face=3)
  with pytest.raises(edit.EditError, match="--face=all: a reenactment is driven by one face"):
    editor.reenact(inputs["source"], pair, tmp_path / "x.mp4", face="all")
  with pytest.raises(edit.EditError, match="--face=first: must be longest, all, or a face number"):
    edit.parse_face("first")
  # A picture of the right one picks the right one; a picture without a face, or a threshold nobody
  # meets, is an error that says how close the best came.
  best, distances = editor.match_reference(inputs["right"], editor.faces(pair, "target"), "target")
  assert best == right - 1 and distances[best] < distances[1 - best]
  with pytest.raises(edit.EditError, match="--face_reference=.*blank.png: no face"):
    editor.swap(inputs["source"], pair, tmp_path / "x.mp4", face_reference=inputs["blank"])
  strict = edit.Editor(editor.checkpoint, cache_dir=editor.cache_dir,
                       settings=edit.EditSettings(batch_size=4, reference_threshold=1e-6))
  with pytest.raises(edit.EditError, match=r"matches none of the 2 face\(s\).*the closest, face \d, is at "
                     r"distance \d+\.\d\d, a match is at most 0\.00"):
    strict.swap(inputs["source"], pair, tmp_path / "x.mp4", face_reference=inputs["right"])


def test_reenactment_pastes_the_whole_crop_and_the_face_paste_stays_a_choice(editor, inputs, tmp_path):
  canvas = np.asarray(__import__("PIL.Image").Image.open(inputs["source"]).convert("RGB")).astype(int)
  changed = {}
  for paste in ("crop", "face"):
    report = editor.reenact(inputs["source"], inputs["driving"], tmp_path / f"{paste}.mp4", paste=paste)
    assert report.edited == FRAMES
    frames = [f.image.astype(int) for f in video.read_frames(tmp_path / f"{paste}.mp4")]
    changed[paste] = np.mean([(np.abs(f - canvas).max(axis=-1) > 12).mean() for f in frames])
  # The default pastes the crop: beyond the face, the head's outline and the background change too.
  assert dict(editor.settings.paste)["reenact"] == "crop" and changed["crop"] > changed["face"] + 0.05
  with pytest.raises(edit.EditError, match="--paste=all: must be one of face, crop"):
    editor.swap(inputs["source"], inputs["target"], tmp_path / "x.mp4", paste="all")


def test_occluders_keep_the_inputs_pixels_and_a_missing_model_is_said_once(workdir, editor, inputs, tmp_path,
                                                                           monkeypatch, caplog):
  from tfvgan_jax.prep import occluders

  def left_half(paths):  # another occluder source is one function and one name
    def region(image):
      mask = np.zeros(image.shape[:2], np.float32)
      mask[:, :64] = 1
      return mask
    return region, ""

  monkeypatch.setitem(occluders.OCCLUDER_SOURCES, "left_half", left_half)
  kept = edit.Editor(editor.checkpoint, cache_dir=editor.cache_dir,
                     settings=edit.EditSettings(batch_size=4, occluders=("left_half",)))
  report = kept.swap(inputs["source"], inputs["target"], tmp_path / "kept.mp4")
  assert report.occluded == FRAMES
  originals = [f.image.astype(int) for f in video.read_frames(inputs["target"])]
  frames = [f.image.astype(int) for f in video.read_frames(tmp_path / "kept.mp4")]
  left = np.mean([np.abs(a[:, :56] - b[:, :56]).mean() for a, b in zip(frames, originals)])
  right = np.mean([np.abs(a[:, 72:] - b[:, 72:]).mean() for a, b in zip(frames, originals)])
  assert left < 2.0 and right > 3.0  # the occluded half is the input's, the other half edited
  with caplog.at_level("WARNING"):
    missing = edit.Editor(editor.checkpoint, cache_dir=editor.cache_dir, settings=edit.EditSettings(batch_size=4),
                          occluder_models={"palm": tmp_path / "none.tflite"})
    missing.run_jobs([{"task": "swap", "source": inputs["source"], "target": inputs["target"], "out": tmp_path / f"{n}.mp4"}
                      for n in range(2)])
  warnings = [r.getMessage() for r in caplog.records if "occluder 'hands' off" in r.getMessage()]
  assert len(warnings) == 1 and "palm_detection_full.tflite" in warnings[0] and "editing without it" in warnings[0]
  assert (tmp_path / "1.mp4").is_file()
  with pytest.raises(edit.EditError, match="unknown occluder source"):
    edit.Editor(editor.checkpoint, cache_dir=editor.cache_dir, settings=edit.EditSettings(occluders=("mic",)))


def test_the_detector_is_chosen_by_name_and_a_missing_full_range_model_is_named(editor, tmp_path):
  with pytest.raises(edit.EditError, match="--detector=far: must be one of short, full, both"):
    edit.EditSettings(detector="far")
  with pytest.raises(edit.EditError, match="--detector=both: the full-range face detector .*data_prep.models fetch"):
    edit.Editor(editor.checkpoint, cache_dir=editor.cache_dir, settings=edit.EditSettings(detector="both"),
                full_range_detector=tmp_path / "none.tflite")


def test_list_faces_and_face_on_the_command_line(workdir, inputs, tmp_path, mediapipe_models, capsys):
  common = [f"--checkpoint={workdir}", f"--cache_dir={tmp_path / 'cache'}", "--noprogress"]
  with flagsaver.flagsaver():
    flags.FLAGS(["edit", "--list_faces", f"--target={inputs['pair']}", *common])
    edit.main([])
  out = capsys.readouterr().out
  assert "2 face tracks in" in out and "  2: 8 frames (0-7), mean box (" in out and "pair-face2.png" in out
  with flagsaver.flagsaver():
    flags.FLAGS(["edit", "--task=swap", f"--source={inputs['source']}", f"--target={inputs['pair']}", "--face=3",
                 f"--out={tmp_path / 'x.mp4'}", *common])
    with pytest.raises(edit.EditError, match="has 2 face tracks"):
      edit.main([])
