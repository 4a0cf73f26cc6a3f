"""The papers' Table I for a trained checkpoint, on held-out frame records.

    python -m tfvgan_jax.evaluate --checkpoint=WORKDIR --videos=RECORDS [--num_videos=8 --num_frames=8] \\
        [--inception=pt_inception.onnx] [--face_recognition=w600k_r50.onnx] [--out=DIR]

writes DIR/results.md and DIR/results.json (DIR defaults to WORKDIR) and prints the table: one row
per task, the columns of UniFaceGAN Table I (`metrics.TABLE_I_COLUMNS`) and E_tmp (Table II).
The same runs from Python: `evaluation = evaluate_checkpoint(WORKDIR, RECORDS)`.

    python -m tfvgan_jax.evaluate --synthetic --checkpoint=WORKDIR --seed=S [--num_videos=8 --num_frames=8] --out=DIR

measures instead every editing task against its ground truth on held-out synthetic videos
(`evaluate_synthetic`, `data.ground_truth`; the keys of its results.json are `SYNTHETIC_KEYS`).

The records (`data.records`) must be fitted with the checkpoint's morphable model and cut at its
crop size (`config.model.image_size`); they should hold videos the run did not train on, or be its
training records with `--held_out_tail` (default: the run's `data.held_out_tail` when --videos is its
training dataset), which takes only the last fraction of each video, the frames the run never drew.
The first `num_videos` videos (in video-id order) with at least num_frames + 1 frames are used,
frames 0 .. num_frames of each (of its held-out tail):

  row                  X_i (identity)              X_p = X_e (pose, expression,   hint M
                                                   background)
  Swapping (ours)      frame 0 of video v + 1      frames t = 1 .. T of video v   X_p (1 - M^)
  Reenactment (ours)   frame 0 of video v          frames t = 1 .. T of video v   X_i (1 - M^)

(video v + 1 wraps to the first video; where the run's `data.people` rule makes videos share a
person, the next video of another person: `swap_partners`), i.e. self-driving reenactment as the
papers evaluate it, and a swap of every video's face with the next person's identity;
`--swap_pairs=all` swaps every ordered pair of videos of two people instead (V (V - 1) swaps for V
people), for a measure of identity over more pairs. Each sample is generated at t and
t - 1 by the inference pass the training run evaluates with (`inference.build_scene` and
`inference.evaluation_outputs`, jitted, on one device, in batches of `batch_size` samples); its outputs Y at t = 1 .. T form an output video per row and
video. The metrics, over all samples of a row (UniFaceGAN §IV-A, TFVGAN §4):

  SSIM     Y against X_p, which is the ground truth of self-driving reenactment only
           (`metrics.ssim_per_sample` on [0, 1] images, 11 x 11 Gaussian window); '-' for swaps.
           Beside it, results.json's details give two references without a model:
           `ssim_identity_frame`, X_i itself against X_p (`identity_frame_ssim`: an output that
           changes nothing), and `ssim_scene`, the scene R + M that G takes (`scene_ssim`: the
           recombined face pasted into the kept frame).
  E_tmp    reenactment: `metrics.temporal_warping_error_per_sample` of Y(t) and Y(t-1) along the
           recombined mesh's 3D flow, averaged over the samples with a valid flow pixel;
           swapping: `metrics.temporal_error_optical_flow` (OpenCV Farneback flow, pixels whose
           forward and backward flow agree) on each output video, averaged over the videos, as
           TFVGAN Table 3 estimates the flow of swaps. The swap's 3D-flow value (its mesh's flow
           exists too) is in results.json's details. Both are mean squared errors of [0, 1] images.
  E_pose   Euler angles of Y against X_e's record camera, mean absolute difference per angle in
           degrees, (pitch, yaw, roll) as the papers tabulate it (`metrics.pose_error_per_angle`).
           Y's pose is estimated as the data's cameras were: MediaPipe Face Mesh on Y with the
           whole crop as its region (rotated to level X_e's outer eye corners, so a rolled head is
           seen upright; the records' crops leave about the margin Face Mesh expects), its 68 iBUG
           points (`prep.landmarks.ibug68`), and the morphable model fitted to them per output
           video (`prep.fit.fit_clip`: one identity per video, camera per frame).
  E_exp    mean distance between Y's 68 Face Mesh points and X_e's record landmarks, divided by
           X_e's inter-ocular distance (outer eye corners 36 and 45), so that crops of any size
           compare (`metrics.expression_error`, normalize='inter_ocular'); no alignment, since
           Y should take X_e's pose too. The papers report MTCNN's 5 points in pixels of their
           crops; this number is on another scale.
  FID      `metrics.fid` of Inception features (`onnx_models.inception_network`) of all Y against
           those of the X_i of the same samples (TFVGAN: "between Y^t and X_i^t"); X_i repeats
           within a video, and FID is biased upward for small sets: compare equal settings only.
  identity by fitting (details only, with Face Mesh): each output video's 68 Face Mesh points
           fitted with the per-clip fitter (the one identity `prep.fit.fit_clip` gives a clip), and
           each input video's the same way; the output's identity coefficients are compared with
           those of the source's video (X_i's) and the target's (X_p's)
           (`metrics.fitted_identity_per_sample`): cosines, and for swaps the margin
           ||id(Y) - id(X_p)|| - ||id(Y) - id(X_i)|| with its positive share. It needs no recognition
           network but sees only face shape as 68 landmarks reveal it (not skin, texture or hair),
           compressed by the fitter's prior; only fits of the same pipeline compare (fits of Face
           Mesh points differ from fits of other landmarks by more than two people differ).
  E_id     `metrics.identity_error`, 1 - mean cosine similarity of face-recognition embeddings
           (`onnx_models.face_recognition_network`) of each Y and its X_i. The crops are fed whole
           (resized to 112 px), not aligned to ArcFace's five-point template, so values compare
           only between runs of this tool.

FID and E_id need the ONNX files and are '-' without them. E_pose and E_exp need the Face Mesh
model (`prep.model_files.find_models`, or `landmarks_model`); without it they are '-' and a
warning says why. Output frames where Face Mesh's face-presence score is below `min_face_score`
are left out of both (and counted in the details).
"""

from __future__ import annotations

import json
import os
import warnings
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from etils import epath
from PIL import Image

from tfvgan_jax import cli, compilation, distributed, face3d, files, inference, metrics, onnx_models
from tfvgan_jax.data import evaluation as evaluation_data
from tfvgan_jax.data import ground_truth, records, sampling
from tfvgan_jax.prep import fit as fit_lib
from tfvgan_jax.prep import landmarks as landmarks_lib
from tfvgan_jax.prep import model_files

SWAPPING = "Swapping (ours)"
REENACTMENT = "Reenactment (ours)"
COLUMNS = metrics.TABLE_I_COLUMNS + ("e_tmp",)


class EvaluationError(ValueError):
  """An evaluation that cannot run; the message names the input and the problem."""


class LandmarkErrors(NamedTuple):
  """E_pose and E_exp of a set of output videos.

  Attributes:
    e_pose: [3] (pitch, yaw, roll) degrees, or None when no frame had a face.
    e_exp: inter-ocular distances, or None when no frame had a face.
    cameras: [V, T, 6] the cameras fitted to the outputs' landmarks (NaN where not fitted).
    points: [V, T, 68, 2] the outputs' iBUG-68 Face Mesh points in crop pixels.
    used: [V, T] bool, the frames that entered both errors (face score >= the threshold).
    id_coeffs: [V, K_id] the identity fitted to each output video's landmarks (NaN where not fitted).
    inner_id_coeffs: [V, K_id] the same fitted to the inner face's landmarks only (`INNER_FACE`).
    exp_coeffs: [V, T, K_exp] the expressions of the all-points fit (NaN where not fitted).
  """

  e_pose: Optional[np.ndarray]
  e_exp: Optional[float]
  cameras: np.ndarray
  points: np.ndarray
  used: np.ndarray
  id_coeffs: np.ndarray
  inner_id_coeffs: np.ndarray
  exp_coeffs: np.ndarray


# The iBUG-68 points of the inner face (brows, nose, eyes, mouth: 17-67), without the jaw line (0-16).
# A swap pastes the source's inner face into the target's head, whose outline stays the target's
# where the source's face is narrower, so an identity fitted to all 68 points sees mostly the target.
INNER_FACE = np.arange(17, 68)


class Evaluation(NamedTuple):
  """What `evaluate_checkpoint` measured.

  Attributes:
    rows: {SWAPPING, REENACTMENT: {metric key: value or None}} (`metrics.results_table` input).
    markdown: the table and the notes below it.
    document: the results.json contents: `metrics.results_table`'s JSON plus 'details'.
    outputs: {'reenactment', 'swapping': `inference.evaluation_outputs` as NumPy, [V * T, ...]
      video-major: sample v * T + (t - 1) is frame t of video v}.
  """

  rows: dict
  markdown: str
  document: dict
  outputs: dict


# ----- the two evaluation batches -----


# How swaps pair the evaluated videos (`swap_pairs`): 'next', each video with the next video of
# another person (V swaps); 'all', every ordered pair of videos of two different people.
SWAP_PAIRS = ("next", "all")


def swap_partners(people: list[str]) -> np.ndarray:
  """[V] the video whose identity video v's swap takes: the next video (wrapping) of another person,
  or simply the next one where every video is of one person.

  Args:
    people: each evaluated video's person (`sampling.person_of`; the video id itself when each
      video is a person of its own, which gives v + 1).
  """
  count = len(people)
  partners = np.zeros(count, np.int64)
  for v in range(count):
    others = [u for u in ((v + step) % count for step in range(1, count)) if people[u] != people[v]]
    partners[v] = others[0] if others else (v + 1) % count
  return partners


def swap_pairs(people: list[str], how: str = "next") -> np.ndarray:
  """[P, 2] (target video, source video) of the swaps (`SWAP_PAIRS`); 'all' falls back to 'next'
  where every video is of one person."""
  if how not in SWAP_PAIRS:
    raise EvaluationError(f"--swap_pairs={how!r}: must be one of {', '.join(SWAP_PAIRS)}")
  pairs = [(v, u) for v in range(len(people)) for u in range(len(people)) if people[u] != people[v]]
  if how == "next" or not pairs:
    return np.stack([np.arange(len(people)), swap_partners(people)], axis=1)
  return np.array(pairs, np.int64)


def swapping_batch(reenactment: dict, num_frames: int, pairs: Optional[np.ndarray] = None) -> dict:
  """The swap batch of a self-reenactment batch: for each (target v, source u) pair, video v's
  frames with video u's identity.

  Args:
    reenactment: `data.evaluation.self_reenactment_batch` of V >= 2 videos and `num_frames` frames
      each (video-major).
    num_frames: T.
    pairs: [P, 2] (`swap_pairs`); default each video with the next (v + 1, wrapping).

  Returns:
    P x T samples in the same layout (pair-major), `branch` INTER, so that the hint is X_p (1 - M^)
    (`inference.build_scene`).
  """
  num_videos = len(reenactment["branch"]) // num_frames
  if pairs is None:
    pairs = np.stack([np.arange(num_videos), (np.arange(num_videos) + 1) % num_videos], axis=1)
  pairs = np.asarray(pairs, np.int64)
  frames = np.arange(num_frames)[None, :]
  targets = (pairs[:, :1] * num_frames + frames).reshape(-1)
  sources = (pairs[:, 1:] * num_frames + frames).reshape(-1)
  batch = {}
  for role, value in reenactment.items():
    rows = sources if role.startswith("identity") else targets
    batch[role] = {key: field[rows] for key, field in value.items()} if isinstance(value, dict) else value[rows]
  batch["branch"] = np.full(len(targets), sampling.INTER, reenactment["branch"].dtype)
  batch["index"] = np.arange(len(targets), dtype=np.int64)
  return batch


def _checkpoint(checkpoint, face_model: Optional[str]) -> inference.InferenceCheckpoint:
  """`checkpoint` itself, or the one loaded from a training workdir (errors as `EvaluationError`)."""
  if isinstance(checkpoint, inference.InferenceCheckpoint):
    return checkpoint
  try:
    return inference.load_checkpoint(checkpoint, face_model)
  except inference.CheckpointError as error:
    raise EvaluationError(str(error)) from None


def evaluation_pass(checkpoint: inference.InferenceCheckpoint, expression_source: str = "appearance"):
  """The jitted (params, variables, batch, model) -> `inference.evaluation_outputs` of a checkpoint,
  its scenes built with `expression_source` (`inference.build_scene`)."""
  tolerance = float(checkpoint.config.render.tolerance)
  relight = bool(checkpoint.config.render.get("relight", False))

  @jax.jit
  def generate(params, variables, chunk, model):
    scene = inference.build_scene(model, chunk, tolerance, expression_source, relight=relight)
    return inference.evaluation_outputs(checkpoint.networks, params, variables, scene)

  return generate


def generate_outputs(generate, checkpoint: inference.InferenceCheckpoint, batch: dict, model: face3d.MorphableModel,
                     batch_size: int) -> dict:
  """Runs the jitted `generate` (params, variables, batch, model) over a batch in chunks of
  `batch_size` samples.

  The last chunk is padded by repeating its last sample (one compilation serves every chunk; G
  uses its running batch statistics, so padding changes no real output) and the padding dropped.

  Returns:
    {name: [B, ...] NumPy}, the outputs of `inference.evaluation_outputs`.
  """
  size = len(batch["branch"])
  results = [jax.device_get(generate(checkpoint.params, checkpoint.variables, chunk, model))
             for chunk in padded_chunks(inference.step_batch(batch), size, batch_size)]
  return {name: np.concatenate([result[name] for result in results])[:size] for name in results[0]}


def padded_chunks(batch: dict, size: int, batch_size: int) -> list[dict]:
  """Splits a [size, ...] batch pytree into chunks of `batch_size`, the last padded by repetition
  (`inference.pad_batch`)."""
  chunk = min(batch_size, size)
  batch, _ = inference.pad_batch(batch, chunk)
  padded = len(jax.tree.leaves(batch)[0])
  return [jax.tree.map(lambda x, start=start: x[start:start + chunk], batch) for start in range(0, padded, chunk)]


def to_uint8(images: np.ndarray) -> np.ndarray:
  """`inference.to_uint8`: [..., 3] floats in [0, 1] -> uint8."""
  return inference.to_uint8(images)


# ----- the metrics of a row -----


def mean_temporal_error(outputs: dict) -> float:
  """E_tmp with the 3D flow: the mean of the per-sample errors over samples with a valid flow pixel."""
  return metrics.mean_over_samples_with_flow(outputs["temporal_error"], outputs["flow_pixels"])


def optical_flow_temporal_error(videos: np.ndarray) -> float:
  """E_tmp with OpenCV's flow: `metrics.temporal_error_optical_flow` per video, averaged over videos.

  Args:
    videos: [V, T, S, S, 3] uint8, T >= 2.
  """
  return float(np.mean([metrics.temporal_error_optical_flow(video) for video in videos]))


def face_region(size: int, reference_points: np.ndarray) -> landmarks_lib.RegionOfInterest:
  """Face Mesh's region for a crop: the whole S x S crop, turned to level the reference's eyes.

  Args:
    size: S.
    reference_points: [68, 2] iBUG-68 points (the expression driver's record landmarks).
  """
  right, left = face3d.IBUG68_OUTER_EYE_CORNERS
  rotation = landmarks_lib.eye_line_rotation(reference_points[right], reference_points[left])
  return landmarks_lib.RegionOfInterest(np.full(2, size / 2.0, np.float32), float(size), rotation)


def landmark_errors(videos: np.ndarray, driver_points: np.ndarray, driver_cameras: np.ndarray,
                    model: face3d.MorphableModel, landmarker, min_face_score: float = 0.5) -> LandmarkErrors:
  """E_pose and E_exp of output videos against their expression drivers (module docstring).

  Args:
    videos: [V, T, S, S, 3] uint8 output crops.
    driver_points: [V, T, 68, 2] X_e's iBUG-68 landmarks in crop pixels (x right, y down).
    driver_cameras: [V, T, 6] X_e's cameras [pitch, yaw, roll, scale, tx, ty].
    model: the morphable model that `driver_cameras` were fitted with.
    landmarker: a `prep.landmarks.FaceMesh`.
    min_face_score: frames whose face-presence score is lower are left out.

  Returns:
    `LandmarkErrors`.
  """
  videos = np.asarray(videos)
  num_videos, num_frames, size = videos.shape[:3]
  points = np.full((num_videos, num_frames, 68, 2), np.nan, np.float32)
  cameras = np.full((num_videos, num_frames, face3d.CAMERA_SIZE), np.nan, np.float32)
  used = np.zeros((num_videos, num_frames), bool)
  id_coeffs = np.full((num_videos, model.num_id), np.nan, np.float32)
  inner_id_coeffs = id_coeffs.copy()
  exp_coeffs = np.full((num_videos, num_frames, model.num_exp), np.nan, np.float32)
  inner_weights = np.zeros(68, np.float32)
  inner_weights[INNER_FACE] = 1.0
  for v in range(num_videos):
    for t in range(num_frames):
      found = landmarker(videos[v, t], face_region(size, driver_points[v, t]))
      points[v, t] = landmarks_lib.ibug68(found.points)[:, :2]
      used[v, t] = found.score >= min_face_score
    if used[v].any():
      fit = fit_lib.fit_clip(model, points[v], valid=used[v])
      cameras[v], id_coeffs[v], exp_coeffs[v] = fit.cameras, fit.id_coeffs, fit.exp_coeffs
      inner_id_coeffs[v] = fit_lib.fit_clip(model, points[v], valid=used[v], point_weights=inner_weights).id_coeffs
  if not used.any():
    return LandmarkErrors(None, None, cameras, points, used, id_coeffs, inner_id_coeffs, exp_coeffs)
  e_pose = np.asarray(metrics.pose_error_per_angle(cameras[used], np.asarray(driver_cameras)[used]))
  e_exp = float(metrics.expression_error(points[used], np.asarray(driver_points)[used], normalize="inter_ocular"))
  return LandmarkErrors(e_pose, e_exp, cameras, points, used, id_coeffs, inner_id_coeffs, exp_coeffs)


def fitted_identity(fitted: np.ndarray, source: np.ndarray, target: np.ndarray, swapped: bool,
                    prefix: str = "fitted_identity") -> dict:
  """The identity measure without a recognition network (`metrics.fitted_identity_per_sample`),
  averaged over the videos fitted on both sides. The margin (and its positive share) only for
  swaps: in self-driving reenactment the source is the target.

  Args:
    fitted: [V, K_id] the identity fitted to each output video.
    source, target: [V, K_id] the identities fitted, the same way, to the source's and the target's
      input videos (not the records' coefficients: a fit from Face Mesh's points and a fit from
      other landmarks differ by more than two people do, so only fits of one pipeline compare).
    swapped: whether source and target are different people.
    prefix: of the keys ('fitted_inner_identity' for the fits of `INNER_FACE`).

  Returns:
    {'fitted_identity_cosine_source', 'fitted_identity_cosine_target', 'fitted_identity_margin',
     'fitted_identity_margin_positive_fraction', 'fitted_identity_videos'} (None where not measured),
    with `prefix` in place of 'fitted_identity'.
  """
  measures = metrics.fitted_identity_per_sample(fitted, source, target)
  found = np.all(np.isfinite(fitted), axis=-1) & np.all(np.isfinite(source), axis=-1) & np.all(
      np.isfinite(target), axis=-1)
  mean = lambda values: float(np.mean(values[found])) if found.any() else None  # noqa: E731
  margin = mean(measures["margin"]) if swapped else None
  return {f"{prefix}_cosine_source": mean(measures["cosine_source"]),
          f"{prefix}_cosine_target": mean(measures["cosine_target"]),
          f"{prefix}_margin": margin,
          f"{prefix}_margin_positive_fraction": mean(measures["margin"] > 0) if margin is not None else None,
          f"{prefix}_videos": int(found.sum())}


def expected_identity_shift(model: face3d.MorphableModel, source_ids: np.ndarray, target_ids: np.ndarray,
                            target_exp: np.ndarray, target_cameras: np.ndarray) -> np.ndarray:
  """[N, T, 68, 2] pixels: where a swap should move the target's iBUG-68 points in each frame, the
  model's points with the source's identity minus with the target's, both in the target frame's
  fitted expression and camera (`metrics.landmark_identity_per_sample`'s shift_t).

  Args:
    model: the morphable model the identities, expressions and cameras were fitted with.
    source_ids, target_ids: [N, K_id]; target_exp: [N, T, K_exp]; target_cameras: [N, T, 6].
  """
  basis = fit_lib.landmark_basis(model, model.landmarks)
  project = jax.jit(jax.vmap(lambda i, e, c: fit_lib.reproject(basis, i, e, c)))
  args = [jnp.asarray(np.nan_to_num(np.asarray(a, np.float32))) for a in (target_exp, target_cameras)]
  return np.asarray(project(jnp.asarray(np.nan_to_num(source_ids)), *args)
                    - project(jnp.asarray(np.nan_to_num(target_ids)), *args))


def landmark_identity(output: LandmarkErrors, target: LandmarkErrors, expected_shift: np.ndarray,
                      prefix: str = "landmark_identity") -> dict:
  """The swaps' identity measure in the target's own poses (`metrics.landmark_identity_per_sample`)
  on the inner face (`INNER_FACE`: the paste keeps the target's outline where the source's face is
  narrower), averaged over the swaps with a detected frame.

  Args:
    output: the swaps' `landmark_errors`; target: the target videos' (row n: swap n's target).
    expected_shift: `expected_identity_shift` of the swaps.
    prefix: of the keys.

  Returns:
    {prefix + '_margin', '_margin_positive_fraction', '_transfer', '_videos'} (None where not measured).
  """
  valid = output.used & target.used & np.all(np.isfinite(expected_shift), axis=(-2, -1))
  measures = metrics.landmark_identity_per_sample(output.points, target.points, expected_shift, valid, INNER_FACE)
  found = np.isfinite(measures["margin"]) & np.isfinite(measures["transfer"])
  mean = lambda values: float(np.mean(values[found])) if found.any() else None  # noqa: E731
  return {f"{prefix}_margin": mean(measures["margin"]),
          f"{prefix}_margin_positive_fraction": mean(measures["margin"] > 0),
          f"{prefix}_transfer": mean(measures["transfer"]), f"{prefix}_videos": int(found.sum())}


def _videos_rows(errors: LandmarkErrors, rows: np.ndarray) -> LandmarkErrors:
  """The per-video fields of `errors` at `rows` (E_pose and E_exp, over all videos, kept)."""
  return errors._replace(**{field: getattr(errors, field)[rows] for field in
                            ("cameras", "points", "used", "id_coeffs", "inner_id_coeffs", "exp_coeffs")})


def swap_identity_references(output: LandmarkErrors, inputs: LandmarkErrors, pairs: np.ndarray, result: dict,
                             drivers: dict, model: face3d.MorphableModel, landmarker,
                             min_face_score: float) -> dict:
  """The swaps' identity in the target's own poses (`landmark_identity`), for the outputs and, as
  the reference of a face that carries the source's shape by construction, for the scene R + M
  (the source's fitted shape rendered in the target's pose and pasted, without G); the fitted
  measure (`fitted_identity`) of the scene too, which says how far that measure can go.

  Args:
    output: the swaps' `landmark_errors`; inputs: the input videos' (row v: video v).
    pairs: [N, 2] (target, source) video of each swap.
    result: the swaps' `generate_outputs` (its 'render' and 'hint' make the scene).
    drivers: the swap batch's expression_t (its landmarks and cameras locate the faces).
  """
  targets, sources = pairs[:, 0], pairs[:, 1]
  target_rows = _videos_rows(inputs, targets)
  shift = expected_identity_shift(model, inputs.id_coeffs[sources], inputs.id_coeffs[targets],
                                  target_rows.exp_coeffs, target_rows.cameras)
  count, num_frames = output.used.shape
  scene = np.asarray(scene_image(result))
  scene = landmark_errors(to_uint8(scene).reshape(count, num_frames, *scene.shape[1:]),
                          drivers["landmarks"].reshape(count, num_frames, 68, 2),
                          drivers["camera"].reshape(count, num_frames, -1), model, landmarker, min_face_score)
  details = {**landmark_identity(output, target_rows, shift),
             **landmark_identity(scene, target_rows, shift, prefix="scene_landmark_identity")}
  for prefix, fitted, input_ids in (("scene_fitted_identity", scene.id_coeffs, inputs.id_coeffs),
                                    ("scene_fitted_inner_identity", scene.inner_id_coeffs, inputs.inner_id_coeffs)):
    details.update(fitted_identity(fitted, input_ids[sources], input_ids[targets], True, prefix))
  return details


def feature_metrics(outputs: np.ndarray, identities: np.ndarray, inception, face_recognition) -> dict:
  """FID and E_id of outputs Y against their identity images X_i ('-', i.e. None, without a network).

  Args:
    outputs, identities: [N, S, S, 3] uint8, row n of one paired with row n of the other.
    inception, face_recognition: `onnx_models.OnnxModel`s or None.
  """
  result = {"fid": None, "e_id": None}
  if inception is not None:
    result["fid"] = metrics.fid(inception(outputs), inception(identities))
  if face_recognition is not None:
    result["e_id"] = float(metrics.identity_error(face_recognition(outputs), face_recognition(identities)))
  return result


# ----- the evaluation -----


def _open_records(videos, checkpoint: inference.InferenceCheckpoint) -> records.FrameDataset:
  """The held-out records, refused when fitted with another model or cut at another size."""
  try:
    dataset = records.open_dataset(videos)
    records.check_model(dataset, checkpoint.face_model)
  except (FileNotFoundError, ValueError) as error:
    raise EvaluationError(f"--videos={videos}: {error}") from error
  if dataset.image_size != checkpoint.image_size:
    raise EvaluationError(
        f"--videos={videos}: the records hold {dataset.image_size} px crops, but the checkpoint was trained on "
        f"{checkpoint.image_size} px crops (config.model.image_size); cut the records at {checkpoint.image_size} px")
  return dataset


def _landmarker(landmarks_model):
  """Face Mesh from `landmarks_model` or the fetched models; None, with a warning, when absent."""
  try:
    if landmarks_model is not None:
      if not os.path.isfile(landmarks_model):
        raise model_files.ModelFilesError(f"{landmarks_model}: no such Face Mesh model file")
      path = os.fspath(landmarks_model)
    else:
      path = model_files.find_models().landmarks
  except model_files.ModelFilesError as error:
    warnings.warn(f"E_pose and E_exp are not measured ('-'): {error}", stacklevel=3)
    return None
  return landmarks_lib.FaceMesh(path)


def evaluate_checkpoint(checkpoint, videos, num_videos: int = 8, num_frames: int = 8, inception=None,
                        face_recognition=None, landmarks_model=None, face_model: Optional[str] = None,
                        batch_size: int = 16, min_face_score: float = 0.5,
                        held_out_tail: Optional[float] = None, pairs_of_videos: str = "next") -> Evaluation:
  """Measures Table I (and E_tmp) of a checkpoint on held-out records (module docstring).

  Args:
    checkpoint: a training workdir, or an `inference.InferenceCheckpoint`.
    videos: a frame dataset fitted with the checkpoint's face model at its crop size.
    num_videos: V >= 2 videos used (the swaps pair different videos); 0: every video long enough.
    num_frames: T >= 2 output frames per video (frames 1 .. T; frame 0 is the identity).
    inception: the FID Inception network's .onnx file; None leaves FID '-'.
    face_recognition: a face-recognition .onnx file; None leaves E_id '-'.
    landmarks_model: Face Mesh's .tflite; default the fetched MediaPipe model, and when that is
      absent E_pose and E_exp are '-' (with a warning).
    face_model: see `inference.load_checkpoint`.
    batch_size: samples per generator call.
    min_face_score: Face Mesh's face-presence score below which an output frame is left out of
      E_pose and E_exp.
    held_out_tail: > 0: only the last fraction of each video's frames (`sampling.split_held_out_tail`);
      default the run's `data.held_out_tail` when `videos` is its training dataset (the tails it never
      trained on), else 0.
    pairs_of_videos: how swaps pair the videos (`SWAP_PAIRS`): 'next' (V swaps) or 'all' (every
      ordered pair of two people).

  Returns:
    `Evaluation`.

  Raises:
    EvaluationError: records of another model or crop size, too few videos, or bad settings.
  """
  if num_videos == 1 or num_videos < 0 or num_frames < 2:
    raise EvaluationError(f"need num_videos >= 2 (swaps pair two videos; 0: every video) and num_frames >= 2 (E_tmp "
                          f"compares consecutive frames), got {num_videos} and {num_frames}")
  if batch_size < 1:
    raise EvaluationError(f"--eval_batch_size={batch_size}: must be at least 1 (samples per generator call)")
  checkpoint = _checkpoint(checkpoint, face_model)
  dataset = _open_records(videos, checkpoint)
  data = checkpoint.config.get("data", {})
  tail = (evaluation_data.evaluation_tail(dataset.path, data.get("videos"), data.get("held_out_tail"))
          if held_out_tail is None else held_out_tail)
  try:
    tail = sampling.check_held_out_tail(tail, "--held_out_tail")
    chosen = evaluation_data.evaluation_videos(dataset.path, num_videos, num_frames, checkpoint.face_model, tail)
  except (records.DatasetError, ValueError) as error:
    raise EvaluationError(f"--videos={videos}: {error}") from error
  reenactment = evaluation_data.reenactment_batch(*chosen, num_frames)
  ids = [video_id for video_id, _ in chosen[1]]
  num_videos = len(reenactment["index"]) // num_frames
  if num_videos < 2:
    raise EvaluationError(f"--videos={videos}: swaps pair two videos; only {num_videos} has at least {num_frames + 1} "
                          f"frames")
  # Each swap takes the identity of the next video of another person (the run's data.people rule).
  rule = data.get("people", "video")
  pairs = swap_pairs([sampling.person_of(video_id, rule) for video_id in ids], pairs_of_videos)
  # The papers' row order: swapping first.
  batches = {SWAPPING: swapping_batch(reenactment, num_frames, pairs), REENACTMENT: reenactment}
  inception = onnx_models.inception_network(inception) if inception else None
  face_recognition = onnx_models.face_recognition_network(face_recognition) if face_recognition else None
  landmarker = _landmarker(landmarks_model)

  generate = evaluation_pass(checkpoint)
  model = jax.tree.map(jnp.asarray, checkpoint.face_model)

  rows, outputs, details = {}, {}, {}
  if landmarker is not None:  # the input videos' identities, fitted as the outputs' are
    shape = (num_videos, num_frames)
    drivers = reenactment["appearance_t"]
    inputs = landmark_errors(drivers["image"].reshape(*shape, *drivers["image"].shape[1:]),
                             drivers["landmarks"].reshape(*shape, 68, 2), drivers["camera"].reshape(*shape, -1),
                             checkpoint.face_model, landmarker, min_face_score)
  for method, batch in batches.items():
    result = generate_outputs(generate, checkpoint, batch, model, batch_size)
    count = len(result["output"]) // num_frames  # output videos: V, or the swaps' P pairs
    output_videos = to_uint8(result["output"]).reshape(count, num_frames, *result["output"].shape[1:])
    row = feature_metrics(to_uint8(result["output"]), to_uint8(result["identity"]), inception, face_recognition)
    row["ssim"] = float(np.mean(result["ssim"])) if method == REENACTMENT else None
    temporal_3d = mean_temporal_error(result)
    row["e_tmp"] = temporal_3d if method == REENACTMENT else optical_flow_temporal_error(output_videos)
    row_details = {"samples": len(result["output"]), "e_tmp_3d_flow": temporal_3d,
                   "e_tmp_flow": "3d_mesh" if method == REENACTMENT else "opencv_farneback"}
    if method == REENACTMENT:
      row_details["ssim_identity_frame"] = identity_frame_ssim(result)
      row_details["ssim_scene"] = scene_ssim(result)
    row["e_pose"] = row["e_exp"] = None
    if landmarker is not None:
      drivers = batch["expression_t"]
      shape = (count, num_frames)
      errors = landmark_errors(output_videos, drivers["landmarks"].reshape(*shape, 68, 2),
                               drivers["camera"].reshape(*shape, -1), checkpoint.face_model, landmarker,
                               min_face_score)
      row["e_pose"], row["e_exp"] = errors.e_pose, errors.e_exp
      row_details.update(landmark_frames=int(errors.used.sum()), frames_without_face=int((~errors.used).sum()))
      swapped = method == SWAPPING
      for prefix, fitted, input_ids in (("fitted_identity", errors.id_coeffs, inputs.id_coeffs),
                                        ("fitted_inner_identity", errors.inner_id_coeffs, inputs.inner_id_coeffs)):
        source_ids, target_ids = ((input_ids[pairs[:, 1]], input_ids[pairs[:, 0]]) if swapped
                                  else (input_ids, input_ids))
        row_details.update(fitted_identity(fitted, source_ids, target_ids, swapped, prefix))
      if swapped:
        row_details.update(swap_identity_references(errors, inputs, pairs, result, drivers, checkpoint.face_model,
                                                    landmarker, min_face_score))
      if not errors.used.all():
        warnings.warn(f"{method}: Face Mesh found no face (score < {min_face_score}) in {int((~errors.used).sum())} "
                      f"of {errors.used.size} output frames; E_pose and E_exp leave them out", stacklevel=2)
    if method == SWAPPING:
      row_details["pairs"] = [[ids[v], ids[u]] for v, u in pairs]  # (target, source)
    rows[method] = row
    outputs["reenactment" if method == REENACTMENT else "swapping"] = result
    details[method] = row_details

  markdown, table_json = metrics.results_table(rows, columns=COLUMNS)
  markdown += results_notes(num_videos, num_frames, inception, face_recognition, landmarker,
                            details[REENACTMENT]["ssim_identity_frame"], details[REENACTMENT]["ssim_scene"])
  document = json.loads(table_json)
  document["details"] = {
      "checkpoint_step": checkpoint.step, "videos": os.fspath(dataset.path), "held_out_tail": tail,
      "num_videos": num_videos,
      "num_frames": num_frames, "image_size": checkpoint.image_size, "face_model": checkpoint.face_model.name,
      "e_pose_units": "degrees (pitch, yaw, roll)", "e_exp_units": "inter-ocular distances",
      "e_tmp_units": "mean squared error of [0, 1] images", "min_face_score": min_face_score, "rows": details}
  return Evaluation(rows, markdown, document, outputs)


def identity_frame_ssim(reenactment: dict) -> float:
  """The reenactment SSIM of no model at all: X_i (the video's identity frame) itself against each
  X_p. On real clips a still camera keeps most of a crop the same from frame to frame, so this
  reference is high (0.81 on the shared clips' held-out tails) and a model's SSIM reads against it."""
  return float(np.mean(metrics.ssim_per_sample(jnp.asarray(reenactment["identity"]),
                                               jnp.asarray(reenactment["appearance"]))))


def scene_ssim(reenactment: dict) -> float:
  """The reenactment SSIM of the scene without G: R + M, the recombined face textured from X_i
  pasted into the kept frame (what `models.generator.residual_over_scene` corrects), against X_p
  (`scene_image`)."""
  return float(np.mean(metrics.ssim_per_sample(scene_image(reenactment), jnp.asarray(reenactment["appearance"]))))


def scene_image(outputs: dict) -> jax.Array:
  """[B, S, S, 3] the scene R + M of `inference.evaluation_outputs` in [0, 1]: they give R and M in
  [0, 1] (0.5 where they are 0), so R + M is R + M - 0.5 there."""
  return jnp.clip(jnp.asarray(outputs["render"]) + jnp.asarray(outputs["hint"]) - 0.5, 0.0, 1.0)


def results_notes(num_videos: int, num_frames: int, inception, face_recognition, landmarker,
                  ssim_identity_frame: Optional[float] = None, ssim_scene: Optional[float] = None) -> str:
  """The lines below the table: what was measured on what, and why a column may be '-'."""
  references = [f"the identity frame itself scores {ssim_identity_frame:.3f}" if ssim_identity_frame is not None else "",
                f"the scene R + M without G {ssim_scene:.3f}" if ssim_scene is not None else ""]
  references = "; ".join(r for r in references if r)
  lines = [f"{num_videos} held-out videos x {num_frames} frames. SSIM: self-driving reenactment only"
           + (f" (no model: {references})" if references else "") + ". "
           "E_tmp: reenactment with the mesh's 3D flow, swapping with OpenCV (Farneback) flow.",
           "E_pose: degrees (pitch, yaw, roll); E_exp: inter-ocular distances (68 Face Mesh points)."]
  if landmarker is not None:
    lines.append("Identity by fitting (results.json details, fitted_identity_*): the output video's fitted identity "
                 "coefficients against the source's and the target's; it sees face shape from 68 landmarks, not skin "
                 "or texture. Swaps also in the target's own poses (landmark_identity_*: the share of the shape change "
                 "from the target to the source that the output's inner-face points carry, 'transfer'), beside the "
                 "same for the scene R + M without G (scene_*), which carries the source's fitted shape by "
                 "construction.")
  missing = [name for name, present in (("FID (--inception)", inception), ("E_id (--face_recognition)",
                                                                         face_recognition),
                                        ("E_pose / E_exp (Face Mesh model)", landmarker)) if present is None]
  if missing:
    lines.append("Not measured: " + ", ".join(missing) + ".")
  return "\n" + "\n".join(lines) + "\n"


def write_results(evaluation, out_dir) -> tuple[epath.Path, epath.Path]:
  """Writes an `Evaluation`'s or `SyntheticEvaluation`'s results.md and results.json into `out_dir`
  (created); returns their paths."""
  out_dir = epath.Path(out_dir).expanduser()
  out_dir.mkdir(parents=True, exist_ok=True)
  markdown_path, json_path = out_dir / "results.md", out_dir / "results.json"
  files.write_text(markdown_path, evaluation.markdown)
  files.write_text(json_path, json.dumps(evaluation.document, indent=2, ensure_ascii=False) + "\n")
  if isinstance(evaluation, SyntheticEvaluation):
    for task, grid in synthetic_grids(evaluation).items():
      with files.atomic_path(out_dir / f"grid_{task}.png") as path:
        Image.fromarray(grid).save(path, format="PNG")
  return markdown_path, json_path


# The columns of a task's grid (`synthetic_grids`): what was asked of the edit, the truth, the output.
SYNTHETIC_GRID_COLUMNS = ("identity", "expression", "appearance", "render", "truth", "output")


def synthetic_grids(evaluation, frame: int = 1) -> dict[str, np.ndarray]:
  """{task: uint8 image}: one row per held-out video (its frame `frame`, t = 1 .. T), columns
  X_i, X_e, X_p, the render R, the truth and Y (`SYNTHETIC_GRID_COLUMNS`)."""
  grids = {}
  for task, outputs in evaluation.outputs.items():
    frames = int(evaluation.document["details"]["num_frames"])
    rows = range(min(frame, frames) - 1, len(outputs["output"]), frames)
    grids[task] = inference.image_grid(outputs, rows, SYNTHETIC_GRID_COLUMNS)
  return grids


# ----- ground truth on held-out synthetic videos -----

# results.json's per-task keys (`evaluate_synthetic`), in the markdown table's order.
SYNTHETIC_KEYS = {
    "psnr": "PSNR (dB) of Y against the truth, whole crop, mean over samples",
    "psnr_face": "PSNR (dB) on the truth's face region (coverage >= 0.5)",
    "ssim": "SSIM against the truth, whole crop (11 x 11 Gaussian window)",
    "ssim_face": "SSIM averaged over window centres in the truth's face region",
    "e_tmp": "E_tmp: MSE of Y(t) and Y(t-1) warped along the recombined mesh's 3D flow",
    "identity_margin": "MSE(Y, target-identity frame) - MSE(Y, truth) on the union of both faces; "
                       "null where the target is the identity (self-reenactment)",
    "identity_margin_positive_fraction": "fraction of samples with a positive identity margin",
    "expression_margin": "MSE(Y, truth with P's expression) - MSE(Y, truth) on the union of both faces; "
                         "null where X_e is X_p",
    "expression_margin_positive_fraction": "fraction of samples with a positive expression margin",
    "samples": "samples (videos x frames)",
}
DEFAULT_SYNTHETIC_SEED = 1000


class SyntheticEvaluation(NamedTuple):
  """What `evaluate_synthetic` measured.

  Attributes:
    tasks: {task name: {key of SYNTHETIC_KEYS: value or None}}.
    per_sample: {task name: {'psnr', 'psnr_face', 'ssim', 'ssim_face', 'identity_margin',
      'expression_margin': [N] NumPy or None}}.
    scene: the same rows for the scene R + M without G (`scene_image`), each task's input to G:
      how far the recombined, textured and pasted face alone goes ('e_tmp' None: the scene of t - 1
      is not kept).
    markdown: the table and the notes below it.
    document: the results.json contents: {'tasks', 'scene', 'keys', 'details'}.
    outputs: {task name: `inference.evaluation_outputs` as NumPy, [N, ...] video-major, and the
      truth as "truth" ([N, S, S, 3] in [0, 1])}; `write_results` draws them as grid_TASK.png.
  """

  tasks: dict
  per_sample: dict
  markdown: str
  document: dict
  outputs: dict
  scene: dict


def margin_per_sample(output, truth, truth_coverage, reference, reference_coverage) -> np.ndarray:
  """[N] MSE(Y, reference) - MSE(Y, truth) over the pixels where either face is (coverage >= 0.5):
  positive when Y is closer to the truth than to the reference. Images in [0, 1]."""
  region = np.maximum(truth_coverage, reference_coverage) >= 0.5
  return np.asarray(metrics.mean_squared_error_per_sample(output, reference, region)
                    - metrics.mean_squared_error_per_sample(output, truth, region))


def truth_metrics(output: np.ndarray, samples) -> dict:
  """The per-sample metrics of outputs Y [N, S, S, 3] in [0, 1] against a task's `TaskSamples`."""
  unit = lambda images: None if images is None else np.asarray(images, np.float32) / 255.0  # noqa: E731
  truth = unit(samples.truth)
  face = samples.truth_coverage >= 0.5
  result = {"psnr": metrics.psnr_per_sample(output, truth),
            "psnr_face": metrics.psnr_per_sample(output, truth, mask=face),
            "ssim": metrics.ssim_per_sample(output, truth),
            "ssim_face": metrics.ssim_per_sample(output, truth, mask=face),
            "identity_margin": None, "expression_margin": None}
  for key, reference, coverage in (("identity_margin", samples.identity_reference, samples.identity_coverage),
                                   ("expression_margin", samples.expression_reference, samples.expression_coverage)):
    if reference is not None:
      result[key] = margin_per_sample(output, truth, samples.truth_coverage, unit(reference), coverage)
  return {key: None if value is None else np.asarray(value) for key, value in result.items()}


def summarize_task(per_sample: dict, outputs: Optional[dict]) -> dict:
  """One task's row of results.json (`SYNTHETIC_KEYS`); 'e_tmp' None without `outputs`."""
  row = {key: float(np.mean(per_sample[key])) for key in ("psnr", "psnr_face", "ssim", "ssim_face")}
  row["e_tmp"] = None if outputs is None else mean_temporal_error(outputs)
  for key in ("identity_margin", "expression_margin"):
    values = per_sample[key]
    row[key] = None if values is None else float(np.mean(values))
    row[f"{key}_positive_fraction"] = None if values is None else float(np.mean(values > 0))
  row["samples"] = len(per_sample["psnr"])
  return row


def synthetic_table(tasks: dict) -> str:
  """The markdown table of `evaluate_synthetic`: one row per task."""
  def number(value, digits):
    return "-" if value is None else (f"{value:.3g}" if value != 0 and abs(value) < 10.0 ** -digits
                                      else f"{value:.{digits}f}")

  def margin(row, key):
    if row[key] is None:
      return "-"
    return f"{row[key]:.3g} ({100 * row[key + '_positive_fraction']:.0f}%)"

  lines = ["| Task | PSNR ↑ | PSNR face ↑ | SSIM ↑ | SSIM face ↑ | E_tmp ↓ | ID margin ↑ (>0) "
           "| Exp margin ↑ (>0) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for name, row in tasks.items():
    lines.append(f"| {name} | {number(row['psnr'], 2)} | {number(row['psnr_face'], 2)} | {number(row['ssim'], 3)} | "
                 f"{number(row['ssim_face'], 3)} | {number(row['e_tmp'], 2)} | {margin(row, 'identity_margin')} | "
                 f"{margin(row, 'expression_margin')} |")
  return "\n".join(lines) + "\n"


def evaluate_synthetic(checkpoint, seed: int = DEFAULT_SYNTHETIC_SEED, num_videos: int = 8, num_frames: int = 8,
                       face_model: Optional[str] = None, batch_size: int = 16) -> SyntheticEvaluation:
  """Every editing task against its ground truth on held-out synthetic videos (`data.ground_truth`).

  Args:
    checkpoint: a training workdir, or an `inference.InferenceCheckpoint`, trained with a morphable
      model that has albedo (the synthetic renderer colours its vertices).
    seed: the held-out corpus's seed (`synthetic.video_seed(seed, v)` for video v); it must not be
      the training corpus's (`config.data.synthetic.seed`).
    num_videos: V >= 3 held-out videos (disentangled manipulation takes three).
    num_frames: T >= 1 output frames per video and task (frames 1 .. T; frame 0 is the identity).
    face_model: see `inference.load_checkpoint`.
    batch_size: samples per generator call.

  Raises:
    EvaluationError: a model without albedo, too few videos, or the training corpus's seed.
  """
  if num_videos < ground_truth.MIN_VIDEOS or num_frames < 1:
    raise EvaluationError(f"need num_videos >= {ground_truth.MIN_VIDEOS} (disentangled manipulation takes identity, "
                          f"expression and appearance from three videos) and num_frames >= 1, got {num_videos} and "
                          f"{num_frames}")
  checkpoint = _checkpoint(checkpoint, face_model)
  if checkpoint.face_model.albedo is None:
    raise EvaluationError(f"the checkpoint's face model {checkpoint.face_model.name!r} has no albedo: the synthetic "
                          f"ground truth renders per-vertex colour (train on a procedural model, e.g. "
                          f"configs/synthetic.py)")
  corpus = checkpoint.config.data.get("synthetic")
  if corpus is not None and int(corpus.seed) == int(seed):
    raise EvaluationError(f"--seed={seed} is the seed of the corpus the run trained on "
                          f"(config.data.synthetic.seed); give another seed for held-out videos")
  size = checkpoint.image_size
  videos = ground_truth.held_out_videos(checkpoint.face_model, seed, num_videos, num_frames, size)
  generate = evaluation_pass(checkpoint, expression_source="expression")
  model = jax.tree.map(jnp.asarray, checkpoint.face_model)
  tasks, per_sample, outputs, scene = {}, {}, {}, {}
  for task in ground_truth.TASKS:
    samples = ground_truth.task_samples(checkpoint.face_model, videos, task, num_frames, size)
    result = generate_outputs(generate, checkpoint, samples.batch, model, batch_size)
    per_sample[task.name] = truth_metrics(result["output"], samples)
    tasks[task.name] = summarize_task(per_sample[task.name], result)
    scene[task.name] = summarize_task(truth_metrics(np.asarray(scene_image(result)), samples), None)
    outputs[task.name] = {**result, "truth": samples.truth.astype(np.float32) / 255.0}
  markdown = synthetic_table(tasks) + (
      f"\n{num_videos} held-out synthetic videos (seed {seed}) x {num_frames} frames per task, {size} px. "
      "Truth: the identity video's shape and skin, the expression video's expression, the appearance video's "
      "pose, and the light and background of the video the output is pasted into (the identity video's in "
      "reenactment, the appearance video's otherwise). Margins: MSE of [0, 1] images on the face region, positive = closer to "
      "what was asked (in brackets: the share of samples with a positive margin).\n"
      "\nThe scene R + M without G, each task's input to G (the recombined face textured from X_i, pasted into "
      "the kept frame), against the same truths:\n\n" + synthetic_table(scene))
  document = {"tasks": tasks, "scene": scene, "keys": SYNTHETIC_KEYS, "details": {
      "checkpoint_step": checkpoint.step, "seed": seed, "num_videos": num_videos, "num_frames": num_frames,
      "image_size": size, "face_model": checkpoint.face_model.name,
      "roles": {task.name: {"identity": f"video v+{task.identity_offset}",
                            "expression": f"video v+{task.expression_offset}", "appearance": "video v",
                            "hint": "X_i (1 - M^)" if task.branch == sampling.INTRA else "X_p (1 - M^)",
                            "light_and_background": f"video v+{ground_truth.scene_offset(task)}"}
                for task in ground_truth.TASKS}}}
  return SyntheticEvaluation(tasks, per_sample, markdown, document, outputs, scene)


# ----- command line -----

# --out here: where results.md and results.json go (default: the checkpoint's workdir).
_CHECKPOINT, _FACE_MODEL, _OUT, _COMPILATION_CACHE = cli.shared_flags()
_VIDEOS = flags.DEFINE_string("videos", None, "held-out frame records fitted with the checkpoint's face model")
_SYNTHETIC = flags.DEFINE_bool("synthetic", False, "evaluate every task against the ground truth of held-out "
                               "synthetic videos instead of on --videos")
_SEED = flags.DEFINE_integer("seed", DEFAULT_SYNTHETIC_SEED, "--synthetic: the held-out videos' corpus seed")
_NUM_VIDEOS = flags.DEFINE_integer("num_videos", 8, "held-out videos evaluated (>= 2; 0: every video long enough)")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 8, "output frames per video (>= 2)")
_INCEPTION = flags.DEFINE_string("inception", None, "FID Inception network (.onnx); without it FID is '-'")
_FACE_RECOGNITION = flags.DEFINE_string("face_recognition", None,
                                        "face-recognition network (.onnx) for E_id; without it E_id is '-'")
_LANDMARKS = flags.DEFINE_string("landmarks_model", None, "Face Mesh .tflite (default: the fetched MediaPipe model)")
_EVAL_BATCH = flags.DEFINE_integer("eval_batch_size", 16, "samples per generator call")
_SWAP_PAIRS = flags.DEFINE_enum("swap_pairs", "next", SWAP_PAIRS, "swaps: each video with the next person's identity, "
                                 "or every ordered pair of videos of two people")
_HELD_OUT_TAIL = flags.DEFINE_float("held_out_tail", None, "evaluate on the last fraction of each video's frames "
                                    "(default: the run's data.held_out_tail when --videos is its training dataset)")
_MIN_FACE_SCORE = flags.DEFINE_float("min_face_score", 0.5,
                                     "output frames with a lower Face Mesh face score are left out of E_pose/E_exp")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  compilation.use_cache(_COMPILATION_CACHE.value)  # before anything compiles
  if not _CHECKPOINT.value or _SYNTHETIC.value == bool(_VIDEOS.value):
    raise app.UsageError("--checkpoint and one of --videos or --synthetic are required")
  distributed.require_one_process("python -m tfvgan_jax.evaluate")
  out_dir = _OUT.value or _CHECKPOINT.value
  try:  # checked before any work
    files.check_output_dir(out_dir, flag="--out" if _OUT.value else "--checkpoint")
  except files.OutputPathError as error:
    raise EvaluationError(str(error)) from None
  if _SYNTHETIC.value:
    evaluation = evaluate_synthetic(_CHECKPOINT.value, seed=_SEED.value, num_videos=_NUM_VIDEOS.value,
                                    num_frames=_NUM_FRAMES.value, face_model=_FACE_MODEL.value,
                                    batch_size=_EVAL_BATCH.value)
  else:
    evaluation = evaluate_checkpoint(
        _CHECKPOINT.value, _VIDEOS.value, num_videos=_NUM_VIDEOS.value, num_frames=_NUM_FRAMES.value,
        inception=_INCEPTION.value, face_recognition=_FACE_RECOGNITION.value, landmarks_model=_LANDMARKS.value,
        face_model=_FACE_MODEL.value, batch_size=_EVAL_BATCH.value, min_face_score=_MIN_FACE_SCORE.value,
        held_out_tail=_HELD_OUT_TAIL.value, pairs_of_videos=_SWAP_PAIRS.value)
  markdown_path, json_path = write_results(evaluation, out_dir)
  print(evaluation.markdown)
  print(f"wrote {markdown_path} and {json_path}")


if __name__ == "__main__":
  cli.run(main)
