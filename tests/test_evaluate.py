"""`python -m tfvgan_jax.evaluate` on a real (tiny) checkpoint and its held-out records.

The checkpoint is conftest's `tiny_run`: `configs/synthetic.py:tiny` (32 px) trained for its two
steps, whose corpus holds the held-out records the evaluation reads. Its outputs are not faces
yet, so Face Mesh's score threshold is 0 where the landmark metrics must produce numbers; their
accuracy is checked on rendered synthetic faces with known cameras and landmarks instead. The ONNX networks are tiny
graphs built with onnx.helper; nothing is downloaded.
"""

import json

import numpy as np
import pytest
from absl import app, flags
from absl.testing import flagsaver

from helpers import save_onnx_model
from tfvgan_jax import evaluate, face3d, inference, metrics, train
from tfvgan_jax.data import records, synthetic
from tfvgan_jax.prep import landmarks

pytestmark = pytest.mark.slow  # trains or edits with a real (tiny) checkpoint

VIDEOS, FRAMES = 2, 3


@pytest.fixture(scope="module")
def run(tiny_run):
  """(workdir, held-out records) of the shared tiny run (conftest's `tiny_run`)."""
  config, workdir = tiny_run
  _, eval_path = train.resolve_data(config, face3d.load_model(config.face_model))
  return workdir, eval_path


@pytest.fixture(scope="module")
def checkpoint(run):
  return inference.load_checkpoint(run[0])


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
  """A channel-mean 'Inception' (3 features) and a conv + pool 'face recogniser' (4 features)."""
  pytest.importorskip("onnx")
  from onnx import helper
  directory = tmp_path_factory.mktemp("onnx")
  inception = save_onnx_model(directory / "inception.onnx",
                              [helper.make_node("GlobalAveragePool", ["images"], ["features"])],
                              ["N", 3, "H", "W"], ["N", 3, 1, 1])
  weights = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
  nodes = [helper.make_node("Conv", ["images", "weights", "bias"], ["conv"]),
           helper.make_node("GlobalAveragePool", ["conv"], ["features"])]
  arcface = save_onnx_model(directory / "arcface.onnx", nodes, ["N", 3, "H", "W"], ["N", 4, 1, 1],
                            [("weights", weights), ("bias", np.full(4, 0.5, np.float32))])
  return inception, arcface


@pytest.fixture(scope="module")
def result(checkpoint, run, onnx_files):
  """The Python evaluation with both ONNX networks and every output frame counted as a face."""
  return evaluate.evaluate_checkpoint(checkpoint, run[1], num_videos=VIDEOS, num_frames=FRAMES,
                                      inception=onnx_files[0], face_recognition=onnx_files[1],
                                      batch_size=4, min_face_score=0.0)


def test_table_has_both_rows_in_the_papers_layout(result):
  assert list(result.rows) == [evaluate.SWAPPING, evaluate.REENACTMENT]
  reenact, swap = result.rows[evaluate.REENACTMENT], result.rows[evaluate.SWAPPING]
  assert -1.0 <= reenact["ssim"] <= 1.0
  assert swap["ssim"] is None
  for row in (reenact, swap):
    assert np.isfinite(row["e_tmp"]) and row["e_tmp"] >= 0.0
    assert np.isfinite(row["fid"]) and row["fid"] >= -1e-6
    assert 0.0 <= row["e_id"] <= 2.0
  lines = result.markdown.splitlines()
  assert lines[0].startswith("| Method | FID ↓ | SSIM ↑ | E_id ↓ | E_pose ↓ | E_exp ↓ | E_tmp ↓")
  assert lines[2].startswith("| Swapping (ours) | ") and lines[2].split(" | ")[2] == "-"
  document = result.document
  assert [row["method"] for row in document["rows"]] == [evaluate.SWAPPING, evaluate.REENACTMENT]
  assert document["details"]["rows"][evaluate.SWAPPING]["e_tmp_flow"] == "opencv_farneback"
  assert document["details"]["num_videos"] == VIDEOS and document["details"]["num_frames"] == FRAMES


def test_reported_numbers_match_a_recomputation_on_the_outputs(result):
  reenact, swap = result.outputs["reenactment"], result.outputs["swapping"]
  assert reenact["output"].shape == (VIDEOS * FRAMES, 32, 32, 3)
  np.testing.assert_allclose(result.rows[evaluate.REENACTMENT]["ssim"],
                             float(metrics.ssim(reenact["output"], reenact["appearance"])), rtol=1e-5, atol=1e-6)
  # The reference of no model: each X_i against its X_p, as the notes under the table say.
  reference = float(metrics.ssim(reenact["identity"], reenact["appearance"]))
  np.testing.assert_allclose(result.document["details"]["rows"][evaluate.REENACTMENT]["ssim_identity_frame"],
                             reference, rtol=1e-5, atol=1e-6)
  assert f"the identity frame itself scores {reference:.3f}" in result.markdown
  # ... and of the scene R + M, computed from R and M in [-1, 1].
  scene = np.clip(((reenact["render"] * 2 - 1) + (reenact["hint"] * 2 - 1) + 1) / 2, 0, 1)
  np.testing.assert_allclose(result.document["details"]["rows"][evaluate.REENACTMENT]["ssim_scene"],
                             float(metrics.ssim(scene, reenact["appearance"])), rtol=1e-5, atol=1e-6)
  has_flow = reenact["flow_pixels"] > 0
  np.testing.assert_allclose(result.rows[evaluate.REENACTMENT]["e_tmp"], np.mean(reenact["temporal_error"][has_flow]),
                             rtol=1e-6)
  videos = evaluate.to_uint8(swap["output"]).reshape(VIDEOS, FRAMES, 32, 32, 3)
  np.testing.assert_allclose(result.rows[evaluate.SWAPPING]["e_tmp"],
                             np.mean([metrics.temporal_error_optical_flow(v) for v in videos]), rtol=1e-6)
  np.testing.assert_allclose(result.document["details"]["rows"][evaluate.SWAPPING]["e_tmp_3d_flow"],
                             np.mean(swap["temporal_error"][swap["flow_pixels"] > 0]), rtol=1e-6)


def test_fid_and_identity_error_use_the_onnx_features(result, onnx_files):
  # The 'Inception' is a channel mean of the 299 px resize: FID of those 3 features, by NumPy.
  from PIL import Image
  for name, method in (("reenactment", evaluate.REENACTMENT), ("swapping", evaluate.SWAPPING)):
    outputs = result.outputs[name]

    def channel_means(images):
      resized = [np.asarray(Image.fromarray(image).resize((299, 299), Image.Resampling.BILINEAR), np.float64)
                 for image in evaluate.to_uint8(images)]
      return np.stack([image.mean(axis=(0, 1)) / 255.0 for image in resized])

    a, b = channel_means(outputs["output"]), channel_means(outputs["identity"])
    mu_a, mu_b, cov_a, cov_b = a.mean(0), b.mean(0), np.cov(a.T), np.cov(b.T)
    eigenvalues = np.linalg.eigvals(cov_a @ cov_b)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sum(
        np.sqrt(np.clip(eigenvalues.real, 0, None)))
    np.testing.assert_allclose(result.rows[method]["fid"], expected, rtol=1e-3, atol=1e-6)
    assert result.rows[method]["e_id"] is not None


def test_swaps_pair_each_video_with_the_next_identity_and_the_appearance_hint(result):
  reenact, swap = result.outputs["reenactment"], result.outputs["swapping"]
  for v in range(VIDEOS):
    rows = slice(v * FRAMES, (v + 1) * FRAMES)
    other = slice(((v + 1) % VIDEOS) * FRAMES, ((v + 1) % VIDEOS + 1) * FRAMES)
    np.testing.assert_array_equal(swap["identity"][rows], reenact["identity"][other])
    np.testing.assert_array_equal(swap["appearance"][rows], reenact["appearance"][rows])
    assert not np.array_equal(swap["identity"][rows], reenact["identity"][rows])
  # Outside the face the hint is the frame it was cut from: X_i for reenactment, X_p for swaps.
  for outputs, source in ((reenact, "identity"), (swap, "appearance")):
    background = outputs["face_mask"] == 0
    assert background.any()
    np.testing.assert_allclose(outputs["hint"][background], outputs[source][background], atol=1e-6)


def test_landmark_metrics_are_numbers_when_face_mesh_is_present(result, mediapipe_models):
  for method in (evaluate.REENACTMENT, evaluate.SWAPPING):
    row = result.rows[method]
    assert np.shape(row["e_pose"]) == (3,) and np.all(np.isfinite(row["e_pose"]))
    assert np.isfinite(row["e_exp"]) and row["e_exp"] >= 0
    details = result.document["details"]["rows"][method]
    assert details["landmark_frames"] == VIDEOS * FRAMES
    assert details["fitted_identity_videos"] == VIDEOS and -1 <= details["fitted_identity_cosine_source"] <= 1
  swap, reenact = (result.document["details"]["rows"][m] for m in (evaluate.SWAPPING, evaluate.REENACTMENT))
  for prefix in ("fitted_identity", "fitted_inner_identity"):
    assert np.isfinite(swap[f"{prefix}_margin"]) and 0 <= swap[f"{prefix}_margin_positive_fraction"] <= 1
    assert reenact[f"{prefix}_margin"] is None and reenact[f"{prefix}_videos"] == VIDEOS
  # Swaps in the target's own poses, for the outputs and for the scene R + M without G.
  for prefix in ("landmark_identity", "scene_landmark_identity"):
    assert swap[f"{prefix}_videos"] == VIDEOS and 0 <= swap[f"{prefix}_margin_positive_fraction"] <= 1
    assert np.isfinite(swap[f"{prefix}_transfer"]) and np.isfinite(swap[f"{prefix}_margin"])
  assert 0 <= swap["scene_fitted_identity_margin_positive_fraction"] <= 1
  assert "landmark_identity_transfer" not in reenact


def test_fitted_identity_measures_by_hand():
  fitted = np.array([[1.0, 0.0], [0.0, 2.0]])
  source = np.array([[2.0, 0.0], [0.0, 1.0]])
  target = np.array([[0.0, 3.0], [0.0, 5.0]])
  measures = metrics.fitted_identity_per_sample(fitted, source, target)
  np.testing.assert_allclose(measures["margin"], [np.sqrt(10) - 1, 3 - 1])
  np.testing.assert_allclose(measures["cosine_source"], [1, 1])
  np.testing.assert_allclose(measures["cosine_target"], [0, 1])


def test_landmark_identity_measures_by_hand():
  """margin = mean |Y - L| - mean |Y - (L + shift)| over inter-ocular distances; transfer =
  <Y - L, shift> / |shift|^2, on a hand-made target whose eye corners are 10 px apart."""
  target = np.zeros((1, 2, 68, 2))
  target[:, :, 45, 0] = 10.0  # inter-ocular distance 10 (points 36 and 45)
  shift = np.zeros_like(target)
  shift[:, :, 50] = [3.0, 4.0]  # one point moves 5 px
  valid = np.ones((1, 2), bool)
  for fraction, margin in ((1.0, 5 / 68 / 10), (0.0, -5 / 68 / 10), (0.5, 0.0)):
    measures = metrics.landmark_identity_per_sample(target + fraction * shift, target, shift, valid)
    np.testing.assert_allclose(measures["margin"], [margin], atol=1e-12)
    np.testing.assert_allclose(measures["transfer"], [fraction], atol=1e-12)
  # A subset of points: the mean runs over it only; an undetected frame is left out, and a
  # sample without a detected frame is NaN.
  output = target + shift
  output[:, 1] += 100.0  # a frame the detector missed
  measures = metrics.landmark_identity_per_sample(output, target, shift, [[True, False]], subset=[50, 51])
  np.testing.assert_allclose(measures["margin"], [5 / 2 / 10])
  np.testing.assert_allclose(measures["transfer"], [1.0])
  assert np.isnan(metrics.landmark_identity_per_sample(output, target, shift, [[False, False]])["margin"][0])
  with pytest.raises(ValueError, match="iBUG-68"):
    metrics.landmark_identity_per_sample(target[:, :, :5], target[:, :, :5], shift[:, :, :5], valid)


def test_landmark_identity_sees_a_swap_that_the_fitted_measure_confuses_with_pose(mediapipe_models):
  """A perfect swap (person B's shape rendered in A's poses and expressions) against A's own video:
  the measure in A's poses puts the swap nearer B and A's video nearer A, with B's identity fitted
  to B's own video of other poses."""
  model = face3d.load_model("procedural:low")
  mesh = landmarks.FaceMesh(mediapipe_models.landmarks)

  def video(identity_seed, motion_seed):
    identity, motion = (synthetic.sample_video(model, seed, 6, 128) for seed in (identity_seed, motion_seed))
    frames = synthetic.render_frames(model, motion.appearance, identity.id_coeffs, motion.exp_coeffs,
                                     motion.cameras, 128)
    vertices = face3d.vertices(model, identity.id_coeffs, motion.exp_coeffs)[:, np.asarray(model.landmarks)]
    points = np.asarray(face3d.project(vertices, face3d.Camera.from_vector(motion.cameras)))[..., :2]
    return frames, points, motion.cameras

  target, swap, source = video(3, 3), video(4, 3), video(4, 4)
  inputs = evaluate.landmark_errors(*(np.stack(a) for a in zip(target, source)), model, mesh)
  outputs = evaluate.landmark_errors(*(np.stack(a) for a in zip(swap, target)), model, mesh)
  assert inputs.used.all() and outputs.used.all()
  targets, sources = np.array([0]), np.array([1])
  target_rows = evaluate._videos_rows(inputs, targets)
  shift = evaluate.expected_identity_shift(model, inputs.id_coeffs[sources], inputs.id_coeffs[targets],
                                           target_rows.exp_coeffs, target_rows.cameras)
  # The shift from the fitted identities points the true way (the model's own points), though the
  # fits recover only part of it (the fitter's prior pulls identity toward the mean).
  truth = swap[1] - target[1]
  assert np.sum(shift[0] * truth) > 0.3 * np.sum(truth ** 2)
  # Face Mesh's points move only part of the way the model's points do (its detections lean to an
  # average face): a perfect swap carries about 0.6 of the shift, true or fitted, and the target's
  # own video 0; the margin is positive for the swap only.
  output_rows = evaluate._videos_rows(outputs, np.array([0]))
  for expected, floor in ((truth[None], 0.5), (shift, 0.5)):
    swapped = evaluate.landmark_identity(output_rows, target_rows, expected)
    unchanged = evaluate.landmark_identity(evaluate._videos_rows(inputs, targets), target_rows, expected)
    assert swapped["landmark_identity_transfer"] > floor and unchanged["landmark_identity_transfer"] == 0.0
    assert unchanged["landmark_identity_margin"] < 0 <= swapped["landmark_identity_margin"]
    assert swapped["landmark_identity_videos"] == 1 and swapped["landmark_identity_margin_positive_fraction"] == 1.0


def test_landmark_errors_on_rendered_faces_with_known_cameras(mediapipe_models):
  """Outputs that are the drivers themselves score a few degrees and a few percent of the eye
  distance; pairing each video with the other's drivers scores far worse."""
  model = face3d.load_model("procedural:low")
  videos, points, cameras = [], [], []
  for seed in (3, 4):
    truth = synthetic.sample_video(model, seed, 4, 128)
    videos.append(synthetic.render_frames(model, truth.appearance, truth.id_coeffs, truth.exp_coeffs,
                                          truth.cameras, 128))
    vertices = face3d.vertices(model, truth.id_coeffs, truth.exp_coeffs)
    landmark_vertices = vertices[:, np.asarray(model.landmarks)]
    points.append(np.asarray(face3d.project(landmark_vertices, face3d.Camera.from_vector(truth.cameras)))[..., :2])
    cameras.append(truth.cameras)
  videos, points, cameras = np.stack(videos), np.stack(points), np.stack(cameras)
  mesh = landmarks.FaceMesh(mediapipe_models.landmarks)
  same = evaluate.landmark_errors(videos, points, cameras, model, mesh)
  assert same.used.all()
  assert np.all(same.e_pose < 4.0) and same.e_exp < 0.15
  # The aggregation, by NumPy: mean |angle difference| in degrees, mean distance / eye distance.
  difference = np.degrees(same.cameras[..., :3] - cameras[..., :3]).reshape(-1, 3)
  np.testing.assert_allclose(same.e_pose, np.mean(np.abs(difference), axis=0), rtol=1e-4, atol=1e-4)
  eyes = np.linalg.norm(points[..., 36, :] - points[..., 45, :], axis=-1)
  expected = np.mean(np.linalg.norm(same.points - points, axis=-1).mean(-1) / eyes)
  np.testing.assert_allclose(same.e_exp, expected, rtol=1e-4)
  swapped = evaluate.landmark_errors(videos, points[::-1], cameras[::-1], model, mesh)
  assert swapped.e_pose[1] > 5 * same.e_pose[1] and swapped.e_exp > 3 * same.e_exp
  # Identity by fitting: two halves of the same person's clip, fitted apart, are each nearer the other
  # half than the other person's (positive margin, higher cosine).
  halves = []
  for half in (slice(0, 4), slice(4, 8)):
    clips, clip_points, clip_cameras = [], [], []
    for seed in (3, 4):
      truth = synthetic.sample_video(model, seed, 8, 128)
      clips.append(synthetic.render_frames(model, truth.appearance, truth.id_coeffs, truth.exp_coeffs[half],
                                           truth.cameras[half], 128))
      vertices = face3d.vertices(model, truth.id_coeffs, truth.exp_coeffs[half])[:, np.asarray(model.landmarks)]
      clip_points.append(np.asarray(face3d.project(vertices, face3d.Camera.from_vector(truth.cameras[half])))[..., :2])
      clip_cameras.append(truth.cameras[half])
    halves.append(evaluate.landmark_errors(np.stack(clips), np.stack(clip_points), np.stack(clip_cameras), model,
                                           mesh))
  # ... with all 68 points and with the inner face's alone (no jaw line).
  for field in ("id_coeffs", "inner_id_coeffs"):
    first, second = (getattr(half, field) for half in halves)
    measures = metrics.fitted_identity_per_sample(first, second, second[::-1])
    assert np.all(measures["margin"] > 0), field
    assert np.all(measures["cosine_source"] > measures["cosine_target"]), field
  assert not np.allclose(halves[0].id_coeffs, halves[0].inner_id_coeffs)


def test_command_line_without_onnx_or_face_mesh_reports_dashes(run, result, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("TFVGAN_MODELS", str(tmp_path / "no_models"))
  workdir, records = run
  with flagsaver.flagsaver():
    flags.FLAGS(["evaluate", f"--checkpoint={workdir}", f"--videos={records}", f"--num_videos={VIDEOS}",
                 f"--num_frames={FRAMES}", f"--out={tmp_path / 'results'}"])
    with pytest.warns(UserWarning, match="E_pose and E_exp are not measured"):
      evaluate.main([])
  printed = capsys.readouterr().out
  assert "| Reenactment (ours) | - |" in printed and "| Swapping (ours) | - | - | - | - | - |" in printed
  document = json.loads((tmp_path / "results" / "results.json").read_text())
  rows = {row["method"]: row for row in document["rows"]}
  for method in (evaluate.REENACTMENT, evaluate.SWAPPING):
    assert rows[method]["fid"] is None and rows[method]["e_id"] is None
    assert rows[method]["e_pose"] is None and rows[method]["e_exp"] is None
    # The same numbers as the Python evaluation of the same checkpoint and records.
    np.testing.assert_allclose(rows[method]["e_tmp"], result.rows[method]["e_tmp"], rtol=1e-4)
  np.testing.assert_allclose(rows[evaluate.REENACTMENT]["ssim"], result.rows[evaluate.REENACTMENT]["ssim"], rtol=1e-5)
  assert (tmp_path / "results" / "results.md").read_text().startswith("| Method |")
  with flagsaver.flagsaver():
    flags.FLAGS(["evaluate", f"--checkpoint={workdir}"])
    with pytest.raises(app.UsageError, match="one of --videos or --synthetic"):
      evaluate.main([])
  # The output folder is checked before any work.
  blocker = tmp_path / "a_file"
  blocker.write_text("keep")
  with flagsaver.flagsaver():
    flags.FLAGS(["evaluate", f"--checkpoint={workdir}", f"--videos={records}", f"--out={blocker}"])
    with pytest.raises(evaluate.EvaluationError, match="a_file: is a file, not a folder"):
      evaluate.main([])
  assert blocker.read_text() == "keep"


def blank_records(directory, model, size, videos=2, frames=3):
  """A small frame dataset of black crops and zero coefficients (only its metadata matters)."""
  examples = [{"image": np.zeros((size, size, 3), np.uint8), "id_coeffs": np.zeros(model.num_id),
               "exp_coeffs": np.zeros(model.num_exp), "camera": np.zeros(face3d.CAMERA_SIZE),
               "landmarks": np.zeros((68, 2)), "video_id": f"video{v}", "frame_index": t,
               "crop_to_source": np.eye(2, 3), "source_path": "blank", "fit_residual": np.float32(0.0)}
              for v in range(videos) for t in range(frames)]
  return records.write_dataset(directory, "blank", examples, model, size)


def test_records_of_another_model_or_size_are_refused(checkpoint, run, tmp_path):
  other_model = blank_records(tmp_path / "other", face3d.load_model("procedural:medium"), 32)
  with pytest.raises(evaluate.EvaluationError, match="fitted with morphable model 'procedural-v1-medium'"):
    evaluate.evaluate_checkpoint(checkpoint, other_model, num_videos=2, num_frames=2)
  smaller = blank_records(tmp_path / "smaller", checkpoint.face_model, 16)
  with pytest.raises(evaluate.EvaluationError, match="hold 16 px crops, but the checkpoint was trained on 32 px"):
    evaluate.evaluate_checkpoint(checkpoint, smaller, num_videos=2, num_frames=2)
  with pytest.raises(evaluate.EvaluationError, match="evaluation needs 5 videos"):
    evaluate.evaluate_checkpoint(checkpoint, run[1], num_videos=5, num_frames=2)
  with pytest.raises(evaluate.EvaluationError, match="num_videos >= 2"):
    evaluate.evaluate_checkpoint(checkpoint, run[1], num_videos=1, num_frames=2)
  with pytest.raises(evaluate.EvaluationError, match="--eval_batch_size=0: must be at least 1"):
    evaluate.evaluate_checkpoint(checkpoint, run[1], num_videos=2, num_frames=2, batch_size=0)


def test_padded_chunks_cover_the_batch_once_with_equal_sizes():
  batch = {"a": np.arange(7), "b": {"c": np.arange(14).reshape(7, 2)}}
  chunks = evaluate.padded_chunks(batch, 7, 3)
  assert [len(chunk["a"]) for chunk in chunks] == [3, 3, 3]
  np.testing.assert_array_equal(np.concatenate([chunk["a"] for chunk in chunks]), [0, 1, 2, 3, 4, 5, 6, 6, 6])
  np.testing.assert_array_equal(chunks[2]["b"]["c"], [[12, 13]] * 3)
  assert len(evaluate.padded_chunks(batch, 7, 16)) == 1


# ----- ground truth on held-out synthetic videos -----


@pytest.fixture(scope="module")
def synthetic_result(checkpoint):
  return evaluate.evaluate_synthetic(checkpoint, seed=1000, num_videos=3, num_frames=2, batch_size=8)


def test_synthetic_evaluation_reports_every_task_against_its_truth(synthetic_result, checkpoint):
  from tfvgan_jax.data import ground_truth
  tasks = synthetic_result.tasks
  assert list(tasks) == list(ground_truth.TASK_NAMES)
  for name, row in tasks.items():
    assert set(row) == set(evaluate.SYNTHETIC_KEYS), name
    assert row["samples"] == 6 and -1 <= row["ssim"] <= 1 and np.isfinite(row["psnr_face"]) and row["e_tmp"] >= 0
  assert tasks["self_reenactment"]["identity_margin"] is None and tasks["swap"]["expression_margin"] is None
  assert 0 <= tasks["swap"]["identity_margin_positive_fraction"] <= 1
  assert 0 <= tasks["disentangled"]["expression_margin_positive_fraction"] <= 1
  # The reported numbers are those of the outputs against an independent rendering of the truth.
  videos = ground_truth.held_out_videos(checkpoint.face_model, 1000, 3, 2, 32)
  samples = ground_truth.task_samples(checkpoint.face_model, videos, ground_truth.TASKS[3], 2, 32)
  output = synthetic_result.outputs["disentangled"]["output"]
  mse = np.mean((output - samples.truth / 255.0) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(tasks["disentangled"]["psnr"], np.mean(10 * np.log10(1 / mse)), rtol=1e-4)
  # The scene rows are the same measures of R + M, G's input, against the same truth.
  assert list(synthetic_result.scene) == list(ground_truth.TASK_NAMES)
  scene = np.clip(synthetic_result.outputs["disentangled"]["render"]
                  + synthetic_result.outputs["disentangled"]["hint"] - 0.5, 0, 1)
  mse = np.mean((scene - samples.truth / 255.0) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(synthetic_result.scene["disentangled"]["psnr"], np.mean(10 * np.log10(1 / mse)), rtol=1e-4)
  region = np.maximum(samples.truth_coverage, samples.expression_coverage) >= 0.5
  margin = [np.mean(((scene[n] - samples.expression_reference[n] / 255.0) ** 2)[region[n]])
            - np.mean(((scene[n] - samples.truth[n] / 255.0) ** 2)[region[n]]) for n in range(len(scene))]
  np.testing.assert_allclose(synthetic_result.scene["disentangled"]["expression_margin"], np.mean(margin),
                             rtol=1e-3, atol=1e-7)
  assert synthetic_result.scene["disentangled"]["e_tmp"] is None
  # X_e of disentangled manipulation is the third video's frame (the scene took its expression).
  np.testing.assert_allclose(synthetic_result.outputs["disentangled"]["expression"],
                             samples.batch["expression_t"]["image"] / 255.0, atol=1e-6)


def test_synthetic_command_line_writes_the_documented_keys(checkpoint, run, synthetic_result, tmp_path, capsys):
  with flagsaver.flagsaver():
    flags.FLAGS(["evaluate", "--synthetic", f"--checkpoint={run[0]}", "--seed=1000", "--num_videos=3",
                 "--num_frames=2", f"--out={tmp_path}"])
    evaluate.main([])
  assert "| swap |" in capsys.readouterr().out
  document = json.loads((tmp_path / "results.json").read_text())
  assert set(document) == {"tasks", "scene", "keys", "details"}
  assert set(document["scene"]["swap"]) == set(evaluate.SYNTHETIC_KEYS)
  assert document["tasks"]["swap"]["identity_margin_positive_fraction"] == pytest.approx(
      synthetic_result.tasks["swap"]["identity_margin_positive_fraction"])
  ssim = synthetic_result.tasks["self_reenactment"]["ssim"]
  assert document["tasks"]["self_reenactment"]["ssim"] == pytest.approx(ssim, rel=1e-5)
  assert (tmp_path / "results.md").read_text().startswith("| Task |")
  # A grid per task: a row per held-out video (its frame 1), X_i, X_e, X_p, R, the truth and Y.
  from PIL import Image
  swap = np.asarray(Image.open(tmp_path / "grid_swap.png"))
  assert swap.shape == (3 * 32, 6 * 32, 3)
  np.testing.assert_array_equal(swap[32:64, 4 * 32:5 * 32],
                                inference.to_uint8(synthetic_result.outputs["swap"]["truth"][2]))
  assert {p.name for p in tmp_path.glob("grid_*.png")} == {f"grid_{task}.png" for task in synthetic_result.tasks}
  with pytest.raises(evaluate.EvaluationError, match="seed of the corpus the run trained on"):
    evaluate.evaluate_synthetic(checkpoint, seed=0, num_videos=3, num_frames=1)
  with pytest.raises(evaluate.EvaluationError, match="num_videos >= 3"):
    evaluate.evaluate_synthetic(checkpoint, num_videos=2, num_frames=1)
  no_albedo = checkpoint._replace(face_model=checkpoint.face_model.replace(albedo=None))
  with pytest.raises(evaluate.EvaluationError, match="has no albedo"):
    evaluate.evaluate_synthetic(no_albedo, num_videos=3, num_frames=1)


def test_swaps_take_the_identity_of_the_next_video_of_another_person():
  assert evaluate.swap_partners(["a", "b", "c"]).tolist() == [1, 2, 0]  # each video its own person: v + 1
  assert evaluate.swap_partners(["alice", "alice", "bob", "carol", "carol"]).tolist() == [2, 2, 3, 0, 0]
  assert evaluate.swap_partners(["solo", "solo"]).tolist() == [1, 0]  # one person: nothing else to take
  assert evaluate.swap_pairs(["a", "b", "c"]).tolist() == [[0, 1], [1, 2], [2, 0]]
  assert evaluate.swap_pairs(["al", "al", "bo"], "all").tolist() == [[0, 2], [1, 2], [2, 0], [2, 1]]
  assert evaluate.swap_pairs(["solo", "solo"], "all").tolist() == [[0, 1], [1, 0]]
  with pytest.raises(evaluate.EvaluationError, match="--swap_pairs='some'"):
    evaluate.swap_pairs(["a", "b"], "some")
  frames = 2
  video = np.repeat(np.arange(3), frames)
  reenactment = {"identity_t": {"video": video}, "identity_prev": {"video": video},
                 "appearance_t": {"video": video}, "expression_t": {"video": video},
                 "branch": np.zeros(3 * frames, np.int32), "index": np.arange(3 * frames)}
  swapped = evaluate.swapping_batch(reenactment, frames, np.array([[0, 2], [1, 0], [2, 0], [2, 1]]))
  assert swapped["identity_t"]["video"].tolist() == [2, 2, 0, 0, 0, 0, 1, 1]
  assert swapped["appearance_t"]["video"].tolist() == [0, 0, 1, 1, 2, 2, 2, 2]
  assert swapped["expression_t"]["video"].tolist() == swapped["appearance_t"]["video"].tolist()
  assert (swapped["branch"] == 1).all() and swapped["index"].tolist() == list(range(8))
  assert evaluate.swapping_batch(reenactment, frames)["identity_prev"]["video"].tolist() == [1, 1, 2, 2, 0, 0]
