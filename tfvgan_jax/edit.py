"""Editing real videos with a trained checkpoint: face swap, reenactment, fully disentangled manipulation.

    python -m tfvgan_jax.edit --task=swap --checkpoint=WORKDIR --source=me.jpg --target=clip.mp4 --out=swap.mp4
    python -m tfvgan_jax.edit --task=reenact --checkpoint=WORKDIR --source=me.jpg --driving=talk.mp4 --out=re.mp4
    python -m tfvgan_jax.edit --task=disentangle --checkpoint=WORKDIR --identity=a.mp4 --expression=b.mp4 \\
        --appearance=c.mp4 --out=mix.mp4

How each task fills the network's three inputs (TFVGAN §4.1, UniFaceGAN §IV-B):

  task         X_i (identity, texture)   X_e (expression)        X_p (appearance: pose, background)   hint M
  swap         source                    target frame t          target frame t                       X_p (1 - M^)
  reenact      source                    driving frame t         driving frame t                      X_i (1 - M^)
  disentangle  identity                  expression frame t      appearance frame t                   X_p (1 - M^)

Every input goes through the preparation of `tfvgan_jax.prep` (detection, Face Mesh tracking,
smoothing, one stable crop per clip, one identity per clip), cached per input file. The identity
input may be a picture or a video; a video gives its identity coefficients (one per clip) and its
most frontal frame as the texture X_i. The recombined face is rendered, E and G run in batches,
and each output crop is pasted back into the full frame with a feathered mask; frames where the
driving face was not tracked pass through unchanged and are counted. The output is an mp4 at the
frame rate of the video that drives the timeline (target, driving or appearance) with its audio
copied, marked as synthetic in its metadata (and with a visible label on request).

Reenactment's `--relative` applies the driving video's motion relative to its first frame to the
source's own pose and expression (as first-order-model's relative mode), instead of the driving
frame's absolute pose and expression.

Which face of the timeline video is edited: `--face=longest` (the default), `--face=N` (the N-th
of `--list_faces`), `--face=all` (every face, each with its own fit, pasted in one pass), or
`--face_reference=PICTURE` (the face that matches the picture, `Editor.match_reference`).
`--detector=full|both` adds MediaPipe's full-range detector for small and distant faces. What is
pasted: the whole output crop for reenactment, the face region for swaps (`EditSettings.paste`,
`--paste`). What stays in front: hands (`EditSettings.occluders`, `prep.occluders`) keep the
input's pixels.

Many edits run in one process with `--jobs=FILE` (or `Editor.run_jobs` with a list): the models
and the compiled network are loaded once, each job's result or failure is reported on its own
line, and a failed job does not stop the others (`read_jobs` describes the file).

The same runs from Python (`Editor`), e.g. in a notebook:

  editor = Editor("runs/voxceleb")
  report = editor.swap("me.jpg", "clip.mp4", "swap.mp4")
  results = editor.run_jobs([{"task": "swap", "source": "me.jpg", "target": "a.mp4", "out": "a_swap.mp4"},
                             {"task": "reenact", "source": "me.jpg", "driving": "b.mp4", "out": "b_re.mp4"}])
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import app, flags, logging
from etils import epath

from tfvgan_jax import cli, compilation, distributed, face3d, files, inference, metrics
from tfvgan_jax.prep import clip as clip_lib
from tfvgan_jax.prep import composite, detect, landmarks, model_files
from tfvgan_jax.prep import crop as crop_lib
from tfvgan_jax.prep import occluders as occluders_lib
from tfvgan_jax.prep import track as track_lib
from tfvgan_jax.prep import video as video_lib

TASKS = ("swap", "reenact", "disentangle")
PASTES = ("face", "crop")
DETECTORS = ("short", "full", "both")
# Each task's inputs, in the order its method takes them.
TASK_INPUTS = {"swap": ("source", "target"), "reenact": ("source", "driving"),
               "disentangle": ("identity", "expression", "appearance")}
# What a job may set besides its task, inputs and output (keyword arguments of the task's method).
JOB_OPTIONS = {"swap": ("face", "face_reference", "paste"), "reenact": ("relative", "face", "face_reference", "paste"),
               "disentangle": ("face", "face_reference", "paste")}


class EditError(ValueError):
  """An edit that cannot be made; the message names the input and the problem."""


# A training run's checkpoint as editing reads it (`inference.load_checkpoint`).
Checkpoint = inference.InferenceCheckpoint


def load_checkpoint(workdir, face_model: Optional[str] = None, step: Optional[int] = None) -> Checkpoint:
  """`inference.load_checkpoint`, its errors as `EditError`s (they name the folder or file)."""
  try:
    return inference.load_checkpoint(workdir, face_model, step)
  except inference.CheckpointError as error:
    raise EditError(str(error)) from None


class Prepared(NamedTuple):
  """One input, tracked and fitted.

  Attributes:
    path: the file.
    is_image: a picture (one frame) rather than a video.
    track: the main face track (source pixels).
    fitted: its crop and fit at the checkpoint's resolution.
    fps: the video's frame rate (0 for a picture).
  """

  path: str
  is_image: bool
  track: clip_lib.FaceTrack
  fitted: clip_lib.FittedClip
  fps: float

  def frontal_index(self) -> int:
    """The tracked frame whose pose is closest to frontal (the texture source X_i)."""
    angles = self.fitted.fit.cameras[:, :2]
    return int(np.argmin(np.sum(angles**2, axis=1)))


@dataclasses.dataclass(frozen=True)
class EditSettings:
  """How edits are made.

  Attributes:
    batch_size: frames per network call (padded, so one compilation serves a whole video).
    feather: width of the soft edge of the pasted face, as a fraction of the crop size.
    relative: reenactment motion relative to the driving video's first frame.
    per_frame: the frame-by-frame baseline: no landmark smoothing and every frame fitted alone (its
      own identity, no temporal terms), to measure what the per-clip fit and smoothing buy.
    label: draw a visible "SYNTHETIC" label on every frame.
    paste: per task, what of the output crop Y goes into the frame: "face" (the rendered face's
      mask, feathered inside its border: everything else stays the frame's) or "crop" (all of Y,
      as the papers output it, feathered at the crop's border where the frame takes over).
      Reenactment pastes the crop: with the face alone, the source's head outline, hair and neck
      stay still while the inner face follows the driver (with a perfect generator, self-
      reenactment's whole-frame error is 2.5 times lower with the crop: README). Swaps keep the
      face: the target's own hair and background are the real ones.
    occluders: the sources of what stays in front of an edited face (`prep.occluders`: "hands");
      where one is found, the input's pixels are kept (swap and disentangle; a reenactment's canvas
      is another picture, whose pixels are not the driver's). A source whose model files are
      missing is left out with one warning.
    detector: the face detector: "short" (MediaPipe's short-range model: faces within about 2 m,
      wider than about a fifth of the frame), "full" (the full-range model: small and distant
      faces) or "both" (their detections merged).
    reference_threshold: the largest `signature_distance` at which a `face_reference` picture
      matches a face track (right matches on the shared clips were at most 1.8, other people
      mostly above 2).
    mark_synthetic: write the synthetic-content tags into the mp4's metadata.
    progress: progress bars (on stderr) while inputs are tracked and while frames are edited.
    prep: tracking settings for the inputs (the crop size is the checkpoint's). Unlike training
      data, a face lost for up to 50 frames and found again in about the same place stays one track,
      so the re-found face is edited too, and the landmark smoothing narrows on fast motion
      (`benchmarks/edit_stability.py` measures both choices).
  """

  batch_size: int = 8
  feather: float = 0.04
  relative: bool = False
  per_frame: bool = False
  label: bool = False
  paste: tuple[tuple[str, str], ...] = (("swap", "face"), ("reenact", "crop"), ("disentangle", "face"))
  reference_threshold: float = 2.2
  occluders: tuple[str, ...] = ("hands",)
  detector: str = "short"
  mark_synthetic: bool = True
  progress: bool = True
  prep: clip_lib.PrepSettings = clip_lib.PrepSettings(min_frames=1, join_gap=50, smooth_motion=0.02,
                                                      track=track_lib.TrackConfig(max_faces=4))

  def __post_init__(self):
    if int(self.batch_size) < 1:
      raise EditError(f"--batch_size={self.batch_size}: must be at least 1 (frames per network call)")
    for task, paste in self.paste:
      if task not in TASKS or paste not in PASTES:
        raise EditError(f"paste: {task}={paste}: tasks are {', '.join(TASKS)}, pastes {', '.join(PASTES)}")
    if self.detector not in DETECTORS:
      raise EditError(f"--detector={self.detector}: must be one of {', '.join(DETECTORS)}")
    if not 0.0 <= float(self.feather) < 0.5:
      raise EditError(f"feather={self.feather}: must be in [0, 0.5) (a fraction of the crop size)")


class EditReport(NamedTuple):
  """What an edit did: frames written, of them edited and passed through, seconds, the output path,
  and the edited frames where an occluder kept some of the input's pixels in front of the face."""

  frames: int
  edited: int
  passed_through: int
  seconds: float
  out: str
  occluded: int = 0


def _synthesis_function(checkpoint: Checkpoint):
  """The jitted pass from a batch of `inference.FrameInputs` to output crops (uint8) and face masks."""
  tolerance = float(checkpoint.config.render.tolerance)
  relight = bool(checkpoint.config.render.get("relight", False))
  networks = checkpoint.networks

  def synthesize(params, variables, model, frames: inference.FrameInputs):
    rendered = inference.render_frames(model, frames, tolerance, relight=relight)
    output, _, _ = inference.blend_scene(networks, params, variables, rendered, train=False)
    return metrics.to_unit_range(output), rendered.face_mask[..., 0]

  return jax.jit(synthesize)


class Editor:
  """Face swap, reenactment and fully disentangled manipulation with one checkpoint.

  Args:
    checkpoint: a training workdir (or a loaded `Checkpoint`).
    face_model: see `load_checkpoint`.
    cache_dir: where input tracks are cached (default `~/.cache/tfvgan_jax/edit`).
    settings: `EditSettings`.
    detector, landmarks, landmarker_task: MediaPipe model files (default: the fetched ones).
    full_range_detector: the full-range detector's file (default: the fetched one), for
      `settings.detector` "full" or "both".
    occluder_models: model files of the occluder sources by key ("palm", "hand"; default: the
      fetched ones).
  """

  def __init__(self, checkpoint, face_model: Optional[str] = None, cache_dir=None,
               settings: EditSettings = EditSettings(), detector=None, landmarks_file=None, landmarker_task=None,
               occluder_models: Optional[dict] = None, full_range_detector=None):
    self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, face_model)
    self.settings = settings
    self.prep = dataclasses.replace(settings.prep, image_size=self.checkpoint.image_size,
                                    **({"smooth": 0.0} if settings.per_frame else {}))
    paths = model_files.find_models(detector=detector, landmarks=landmarks_file, task=landmarker_task)
    detectors = {}
    if settings.detector in ("short", "both"):
      detectors[paths.detector] = detect.FaceDetector(paths.detector)
    if settings.detector in ("full", "both"):
      full = model_files.optional_model(model_files.FULL_RANGE_DETECTOR_FILE, full_range_detector)
      if full is None:
        raise EditError(f"--detector={settings.detector}: the full-range face detector "
                        f"({os.path.basename(model_files.FULL_RANGE_DETECTOR_FILE)}) is not in "
                        f"{model_files.models_dir()}; fetch it with `{model_files.FETCH_COMMAND}`")
      detectors[full] = detect.FaceDetector(full, score_threshold=0.6)
    self.detector = detect.CombinedDetector(detectors.values()) if len(detectors) > 1 else next(iter(detectors.values()))
    self.landmarker = landmarks.FaceMesh(paths.landmarks)
    self.model_hashes = (*(model_files.sha256_of(path) for path in detectors), model_files.sha256_of(paths.landmarks))
    self.cache_dir = epath.Path(cache_dir or os.path.expanduser("~/.cache/tfvgan_jax/edit"))
    self._synthesize = _synthesis_function(self.checkpoint)
    self._model = jax.tree.map(jnp.asarray, self.checkpoint.face_model)
    try:
      self._occluders, missing = occluders_lib.make_occluders(settings.occluders, occluder_models)
    except ValueError as error:
      raise EditError(str(error)) from None
    for message in missing:
      logging.warning("%s; editing without it", message)

  # ----- inputs -----

  def prepare(self, path, role: str, video_only: bool = False) -> Prepared:
    """Tracks and fits one input's main face (the longest track; the tracks are cached per file).

    Raises:
      EditError: naming the role and the file: missing, unreadable, a picture where a video is
        needed, or no usable face.
    """
    path = os.fspath(path)
    if clip_lib.is_image(path) and not video_only:
      try:
        return self._fitted(clip_lib.track_image(path, self.detector, self.landmarker), role, image=True)
      except clip_lib.SkippedVideo as skipped:
        raise EditError(f"--{role}={path}: {skipped.problem} ({skipped.reason})") from skipped
    return self._fitted(self.faces(path, role)[0], role)  # `faces` refuses a picture

  def faces(self, path, role: str) -> list[clip_lib.FaceTrack]:
    """Every face track of a video, longest first (cached per file).

    Raises:
      EditError: naming the role and the file: missing, unreadable, or no usable face.
    """
    path = os.fspath(path)
    if clip_lib.is_image(path):
      raise EditError(f"--{role}={path}: a picture, but {role} must be a video (it sets the frames of the output)")
    try:
      return clip_lib.cached_faces(path, self.detector, self.landmarker, self.prep, self.cache_dir, self.model_hashes,
                                   progress=self._progress(f"tracking --{role}"))
    except clip_lib.SkippedVideo as skipped:
      raise EditError(f"--{role}={path}: {skipped.problem} ({skipped.reason})") from skipped

  def _fitted(self, track: clip_lib.FaceTrack, role: str, image: bool = False) -> Prepared:
    try:
      fitted = clip_lib.fit_track(track, self.checkpoint.face_model, self.prep, per_frame=self.settings.per_frame)
    except clip_lib.SkippedVideo as skipped:
      raise EditError(f"--{role}={track.source}: {skipped.problem} ({skipped.reason})") from skipped
    return Prepared(track.source, image, track, fitted, 0.0 if image else track.fps)

  def prepare_faces(self, path, role: str, face="longest", face_reference=None) -> list[Prepared]:
    """The faces of the video `path` to edit, tracked and fitted: `face` is "longest", "all" (every
    track with at least a tenth of the longest one's frames) or N (the N-th of `list_faces`, from
    1); `face_reference`, a picture, picks the face that looks most like it (`match_reference`) and
    overrides `face`.

    Raises:
      EditError: a face number beyond the tracks (saying how many there are), or a reference
        picture without a face or matching none of them (saying how close the best came).
    """
    tracks = self.faces(path, role)
    if face_reference is not None:
      chosen = [self.match_reference(face_reference, tracks, role)[0]]
    else:
      face = parse_face(face)
      if face == "longest":
        chosen = [0]
      elif face == "all":
        chosen = [n for n, t in enumerate(tracks) if len(t.frames) >= 0.1 * len(tracks[0].frames)]
      elif face > len(tracks):
        raise EditError(f"--face={face}: --{role}={os.fspath(path)} has {len(tracks)} face track"
                        f"{'s' if len(tracks) > 1 else ''} (numbered 1 to {len(tracks)}; --list_faces shows them)")
      else:
        chosen = [face - 1]
    return [self._fitted(tracks[n], role) for n in chosen]

  def match_reference(self, picture, tracks: list[clip_lib.FaceTrack], role: str) -> tuple[int, np.ndarray]:
    """The track whose face is the picture's: the smallest `signature_distance` between the picture's
    face and each track's (the median over up to `REFERENCE_FRAMES` of its frames).

    The fitted identity coefficients alone were measured first: on the shared clips tiled in pairs
    they picked the right person in only about half the trials (the morphable model's identity
    from one picture is mostly noise next to the differences between people); the landmark shape
    and the face's colours together picked it in every trial (`benchmarks/face_reference_bench.py`).

    Returns:
      (index of the track, [len(tracks)] distances).

    Raises:
      EditError: the picture has no face, or even the closest track is farther than
        `settings.reference_threshold` (the message gives the closest distance).
    """
    picture = os.fspath(picture)
    try:
      reference = clip_lib.track_image(picture, self.detector, self.landmarker)
      reference_signature = face_signature(clip_lib.read_image(picture), reference.points[0])
    except clip_lib.SkippedVideo as skipped:
      raise EditError(f"--face_reference={picture}: {skipped.problem} ({skipped.reason})") from None
    samples = [np.linspace(0, len(t.frames) - 1, min(REFERENCE_FRAMES, len(t.frames))).round().astype(int)
               for t in tracks]
    wanted = {int(t.frames[k]) for t, chosen in zip(tracks, samples) for k in chosen}
    images = {f.index: f.image for f in video_lib.read_frames(tracks[0].source, start=min(wanted), stop=max(wanted) + 1)
              if f.index in wanted}
    distances = np.array([np.median([signature_distance(reference_signature,
                                                        face_signature(images[int(t.frames[k])], t.points[k]))
                                     for k in chosen]) for t, chosen in zip(tracks, samples)])
    best = int(np.argmin(distances))
    if distances[best] > self.settings.reference_threshold:
      raise EditError(f"--face_reference={picture}: matches none of the {len(tracks)} face(s) of "
                      f"--{role}={tracks[0].source}; the closest, face {best + 1}, is at distance "
                      f"{distances[best]:.2f}, a match is at most {self.settings.reference_threshold:.2f}")
    return best, distances

  def list_faces(self, path, role: str = "target", thumbnails=None) -> list["FaceInfo"]:
    """The face tracks of a video as `--face=N` numbers them, each with a thumbnail PNG (the face's
    middle frame, cropped) written into the folder `thumbnails` (default: the cache folder)."""
    tracks = self.faces(path, role)
    folder = epath.Path(thumbnails or self.cache_dir / "faces")
    folder.mkdir(parents=True, exist_ok=True)
    stem = clip_lib.safe_file_name(os.path.splitext(os.path.basename(os.fspath(path)))[0])
    found = []
    for number, track in enumerate(tracks, start=1):
      boxes = track_lib.box_of_points(track.points)
      middle = len(track.frames) // 2
      frame = next(video_lib.read_frames(track.source, start=int(track.frames[middle]),
                                         stop=int(track.frames[middle]) + 1)).image
      box = crop_lib.stable_crop(track.points[middle:middle + 1], track.frame_size, self.prep.crop_scale)
      thumbnail = os.fspath(folder / f"{stem}-face{number}.png")
      files.write_bytes(thumbnail, png_bytes(crop_lib.crop_image(frame, box, 128)))
      found.append(FaceInfo(number, len(track.frames), int(track.frames[0]), int(track.frames[-1]),
                            tuple(float(v) for v in np.round(boxes.mean(axis=0), 1)), thumbnail))
    return found

  def _progress(self, description: str) -> Callable[..., Iterator]:
    """Wraps an iterator in a progress bar (or leaves it alone with `settings.progress` off)."""
    def wrap(iterable, total=None):
      return tqdm.tqdm(iterable, total=total, desc=description, unit="frame", disable=not self.settings.progress,
                       leave=False, dynamic_ncols=True)
    return wrap

  # ----- the three tasks -----

  def _paste(self, task: str, paste: Optional[str]) -> str:
    paste = dict(self.settings.paste)[task] if paste is None else paste
    if paste not in PASTES:
      raise EditError(f"--paste={paste}: must be one of {', '.join(PASTES)}")
    return paste

  def swap(self, source, target, out, face="longest", face_reference=None, paste: Optional[str] = None) -> EditReport:
    """The source's identity on the target video (everything else from the target).

    `face` / `face_reference` choose the target's face(s) to replace (`prepare_faces`); `paste`
    overrides `settings.paste` ("face" or "crop").
    """
    out = check_output(out, source=source, target=target, face_reference=face_reference)
    source_in = self.prepare(source, "source")
    faces = [EditedFace(t, t.fitted.fit.exp_coeffs.__getitem__, t.fitted.fit.cameras.__getitem__)
             for t in self.prepare_faces(target, "target", face, face_reference)]
    return self._edit(source_in, target, faces, hint_from_identity=False, out=out, paste=self._paste("swap", paste))

  def reenact(self, source, driving, out, relative: Optional[bool] = None, face="longest",
              face_reference=None, paste: Optional[str] = None) -> EditReport:
    """The source's face and background moved by the driving video's pose and expression.

    `face` / `face_reference` choose the driving face (one: "all" is refused).
    """
    if face_reference is None and parse_face(face) == "all":
      raise EditError("--face=all: a reenactment is driven by one face (choose it with --face=N or --face_reference)")
    out = check_output(out, source=source, driving=driving, face_reference=face_reference)
    source_in = self.prepare(source, "source")
    (driving_in,) = self.prepare_faces(driving, "driving", face, face_reference)
    relative = self.settings.relative if relative is None else relative
    expression, camera = reenactment_motion(source_in, driving_in, relative)
    return self._edit(source_in, driving, [EditedFace(driving_in, expression, camera)], hint_from_identity=True,
                      out=out, canvas=source_in, paste=self._paste("reenact", paste))

  def disentangle(self, identity, expression, appearance, out, face="longest", face_reference=None,
                  paste: Optional[str] = None) -> EditReport:
    """Identity, expression and appearance (pose and background) from three inputs.

    `face` / `face_reference` choose the appearance video's face(s) to replace.
    """
    out = check_output(out, identity=identity, expression=expression, appearance=appearance,
                       face_reference=face_reference)
    identity_in = self.prepare(identity, "identity")
    expression_in = self.prepare(expression, "expression")
    expressions = expression_in.fitted.fit.exp_coeffs
    faces = [EditedFace(t, lambda k: expressions[min(k, len(expressions) - 1)], t.fitted.fit.cameras.__getitem__)
             for t in self.prepare_faces(appearance, "appearance", face, face_reference)]
    return self._edit(identity_in, appearance, faces, hint_from_identity=False, out=out,
                      paste=self._paste("disentangle", paste))

  def run(self, job: "Job") -> EditReport:
    """Makes one job's edit (its task's method with its inputs, output and options)."""
    method = getattr(self, job.task)
    return method(*(job.inputs[name] for name in TASK_INPUTS[job.task]), out=job.out, **job.options)

  def run_jobs(self, jobs, on_result: Optional[Callable[["JobResult"], None]] = None) -> list["JobResult"]:
    """Makes many edits with the models loaded once; a job that fails is reported and the rest done.

    Args:
      jobs: `Job`s (as `read_jobs` gives them), or dicts with the keys of a jobs file's JSON line
        ({"task": "swap", "source": ..., "target": ..., "out": ...}); a dict that is not a valid
        job becomes a failed result.
      on_result: called with each result as soon as its job is done (the command line prints it).

    Returns:
      One `JobResult` per job, in order.
    """
    results = []
    for number, job in enumerate(jobs, start=1):
      result = None
      if not isinstance(job, Job):
        try:
          job = job_from_dict(job, number)
        except EditError as error:
          fields = job if isinstance(job, dict) else {}
          result = JobResult(number, str(fields.get("task", "")), str(fields.get("out", "")), None, str(error))
      if result is None:
        try:
          result = JobResult(job.line, job.task, job.out, self.run(job), None)
        except (KeyboardInterrupt, SystemExit):
          raise
        except Exception as error:  # noqa: BLE001 - one failed job is reported, the others still run
          result = JobResult(job.line, job.task, job.out, None, cli.one_line(error))
      results.append(result)
      if on_result is not None:
        on_result(result)
    return results

  # ----- the shared loop -----

  def _edit(self, identity: Prepared, timeline, faces: list["EditedFace"], hint_from_identity: bool, out,
            canvas: Optional[Prepared] = None, paste: str = "face") -> EditReport:
    """Streams the `timeline` video's frames, editing each of `faces` where it is tracked, into `out`.

    Output crops are pasted into the timeline's own frames, or into the `canvas` input's frontal
    frame (reenactment: the source's background), through their face mask or whole (`paste`).
    """
    start = time.perf_counter()
    out = os.fspath(out)
    counts = {"edited": 0, "passed": 0, "occluded": 0}
    frames = self._edited_frames(identity, os.fspath(timeline), faces, hint_from_identity, canvas, paste, counts)
    metadata = dict(video_lib.SYNTHETIC_TAGS) if self.settings.mark_synthetic else None
    written = video_lib.write_video(out, frames, fps=faces[0].prepared.fps, audio_from=os.fspath(timeline),
                                    metadata=metadata)
    return EditReport(written, counts["edited"], counts["passed"], time.perf_counter() - start, out, counts["occluded"])

  def _edited_frames(self, identity: Prepared, timeline: str, faces: list["EditedFace"], hint_from_identity: bool,
                     canvas: Optional[Prepared], paste: str, counts: dict) -> Iterator[np.ndarray]:
    size = self.checkpoint.image_size
    batch_size = self.settings.batch_size
    texture_index = identity.frontal_index()
    identity_crop = crop_of(identity, texture_index, size)
    identity_fit = identity.fitted.fit
    canvas_frame = None if canvas is None else frame_of(canvas, canvas.frontal_index())
    track_frames = [{int(f): k for k, f in enumerate(face.prepared.fitted.frames)} for face in faces]
    feather = self.settings.feather * size
    crop_mask = composite.feathered_mask(np.ones((size, size), np.float32), feather) if paste == "crop" else None
    occlusion = occluders_lib.OcclusionTracker(self._occluders) if self._occluders and canvas is None else None
    # (frame, [(face number, index in its track, crop)]) of the frames waiting for the next batch
    pending: list[tuple[np.ndarray, list[tuple[int, int, np.ndarray]]]] = []

    def flush() -> Iterator[np.ndarray]:
      edits = [edit for _, frame_edits in pending for edit in frame_edits]
      results = []
      for first in range(0, len(edits), batch_size):
        results.extend(zip(*self._run_batch(identity_crop, identity_fit, texture_index, faces,
                                            edits[first:first + batch_size], hint_from_identity)))
      used = 0
      for frame, frame_edits in pending:
        result = canvas_frame if canvas_frame is not None else frame
        for n, _, _ in frame_edits:
          output, mask = results[used]
          mapping = canvas.fitted.crop_to_source if canvas is not None else faces[n].prepared.fitted.crop_to_source
          weight = crop_mask if crop_mask is not None else composite.feathered_mask(mask, feather)
          result = composite.paste_back(result, output, mapping, weight)
          used += 1
        region = occlusion(frame) if occlusion is not None and frame_edits else None
        if region is not None:
          result = keep_pixels(result, frame, region)
          counts["occluded"] += 1
        counts["edited" if frame_edits else "passed"] += 1
        yield even_sized(composite.label_synthetic(result) if self.settings.label else result)
      pending.clear()

    bar = self._progress(f"editing {os.path.basename(timeline)}")
    total = faces[0].prepared.track.frames_decoded or None
    for frame in bar(video_lib.read_frames(timeline), total=total):
      frame_edits = []
      for n, (face, frames) in enumerate(zip(faces, track_frames)):
        k = frames.get(frame.index)
        if k is not None:
          frame_edits.append((n, k, crop_lib.crop_image(frame.image, face.prepared.fitted.box, size)))
      pending.append((frame.image, frame_edits))
      if len(pending) == batch_size:
        yield from flush()
    yield from flush()

  def _run_batch(self, identity_crop, identity_fit, texture_index, faces: list["EditedFace"], edits,
                 hint_from_identity):
    """Output crops [n, S, S, 3] uint8 and face masks [n, S, S] of n <= batch_size (face, k, crop) edits."""
    count = len(edits)
    repeat = lambda x: np.repeat(np.asarray(x, np.float32)[None], count, axis=0)  # noqa: E731
    frames = inference.FrameInputs(
        identity=np.repeat(identity_crop[None], count, axis=0), id_coeffs=repeat(identity_fit.id_coeffs),
        identity_exp=repeat(identity_fit.exp_coeffs[texture_index]),
        identity_camera=repeat(identity_fit.cameras[texture_index]), appearance=np.stack([c for _, _, c in edits]),
        exp_coeffs=np.stack([faces[n].expression(k) for n, k, _ in edits]).astype(np.float32),
        camera=np.stack([faces[n].camera(k) for n, k, _ in edits]).astype(np.float32),
        hint_from_identity=np.full(count, hint_from_identity),
        appearance_id=np.stack([faces[n].prepared.fitted.fit.id_coeffs for n, _, _ in edits]).astype(np.float32),
        appearance_exp=np.stack([faces[n].prepared.fitted.fit.exp_coeffs[k] for n, k, _ in edits]).astype(np.float32))
    # One compilation serves every batch: the last one is padded (G runs with its running statistics).
    frames, _ = inference.pad_batch(frames, self.settings.batch_size)
    outputs, masks = self._synthesize(self.checkpoint.params, self.checkpoint.variables, self._model, frames)
    return inference.to_uint8(np.asarray(outputs)[:count]), np.asarray(masks)[:count]


class EditedFace(NamedTuple):
  """One face of the timeline video to edit: its track and fit, and per tracked frame k the
  expression coefficients and camera the edited face takes."""

  prepared: Prepared
  expression: Callable[[int], np.ndarray]
  camera: Callable[[int], np.ndarray]


class FaceInfo(NamedTuple):
  """One face track of a video, as `--list_faces` prints it (`number` is `--face=N`'s)."""

  number: int
  frames: int
  first_frame: int
  last_frame: int
  mean_box: tuple[float, float, float, float]
  thumbnail: str


# Frames of a track compared with a reference picture.
REFERENCE_FRAMES = 12


def parse_face(face):
  """`--face`'s value: "longest", "all", or a track number N >= 1 (an int).

  Raises:
    EditError: anything else.
  """
  if isinstance(face, (int, np.integer)) and not isinstance(face, bool):
    number = int(face)
  elif str(face).strip().lower() in ("longest", "all"):
    return str(face).strip().lower()
  else:
    try:
      number = int(str(face).strip())
    except ValueError:
      raise EditError(f"--face={face}: must be longest, all, or a face number (1, 2, ...; --list_faces shows "
                      "them)") from None
  if number < 1:
    raise EditError(f"--face={face}: face numbers start at 1 (--list_faces shows them)")
  return number


class FaceSignature(NamedTuple):
  """What tells people apart in `match_reference`: the face's shape and its colours.

  Attributes:
    shape: [468, 3] Face Mesh points, centred and scaled to unit norm.
    colour: [6] mean and standard deviation of R, G, B (0-255) inside the points' convex hull.
  """

  shape: np.ndarray
  colour: np.ndarray


# The signature distance's two parts are divided by these, their typical values between two
# different people on the shared clips, and added.
SHAPE_SCALE, COLOUR_SCALE = 0.08, 30.0


def face_signature(image: np.ndarray, points: np.ndarray) -> FaceSignature:
  """The `FaceSignature` of the face with Face Mesh `points` [468, 3] (image pixels) in `image`."""
  from PIL import Image, ImageDraw
  points = np.asarray(points, np.float64)
  shape = points - points.mean(axis=0)
  shape /= max(np.linalg.norm(shape), 1e-12)
  hull = occluders_lib.convex_hull(points[:, :2])
  region = Image.new("L", (image.shape[1], image.shape[0]), 0)
  ImageDraw.Draw(region).polygon([tuple(p) for p in hull], fill=1)
  pixels = np.asarray(image)[np.asarray(region, bool)].astype(np.float64)
  if not len(pixels):
    pixels = np.zeros((1, 3))
  return FaceSignature(shape, np.concatenate([pixels.mean(axis=0), pixels.std(axis=0)]))


def signature_distance(a: FaceSignature, b: FaceSignature) -> float:
  """Procrustes distance of the shapes (after the best rotation) / SHAPE_SCALE + distance of the
  colours / COLOUR_SCALE: about 1 or less for one person, 1.5 and more for two (shared clips)."""
  u, _, vt = np.linalg.svd(a.shape.T @ b.shape)
  rotation = u @ vt
  shape = float(np.linalg.norm(a.shape @ rotation - b.shape))
  return shape / SHAPE_SCALE + float(np.linalg.norm(a.colour - b.colour)) / COLOUR_SCALE


def png_bytes(image: np.ndarray) -> bytes:
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


class Job(NamedTuple):
  """One edit of a batch.

  Attributes:
    line: where it came from (the jobs file's line number, or its place in a Python list, from 1).
    task: one of TASKS.
    inputs: the task's inputs by role (`TASK_INPUTS`).
    out: the mp4 to write.
    options: keyword arguments of the task's method (`JOB_OPTIONS`).
  """

  line: int
  task: str
  inputs: dict
  out: str
  options: dict


class JobResult(NamedTuple):
  """What became of one job: its report, or the one-line error that stopped it."""

  line: int
  task: str
  out: str
  report: Optional[EditReport]
  error: Optional[str]

  def as_json(self) -> dict:
    result = {"line": self.line, "task": self.task, "out": self.out, "ok": self.error is None}
    if self.report is not None:
      result.update(self.report._asdict())
    else:
      result["error"] = self.error
    return result


_GENERAL_ROLES = {"identity": ("source", "identity"), "appearance": ("target", "driving", "appearance")}


def _parse_bool(value, name: str) -> bool:
  if isinstance(value, bool):
    return value
  text = str(value).strip().lower()
  if text in ("1", "true", "yes"):
    return True
  if text in ("0", "false", "no", ""):
    return False
  raise EditError(f"{name}={value!r}: not a boolean (true or false)")


def job_from_dict(fields: dict, line: int, base_dir=None) -> Job:
  """A `Job` from one line's fields (task, out, the task's inputs, its options; empty values are
  absent). As on the command line, `identity` stands for `source` and `appearance` for `target` /
  `driving`. Relative paths are taken from `base_dir` (the jobs file's folder) where given.

  Raises:
    EditError: naming the line and the field: an unknown task or field, a missing input or output.
  """
  if not isinstance(fields, dict):
    raise EditError(f"job {line}: expected an object of fields, got {type(fields).__name__}")
  fields = {str(k).strip(): v for k, v in fields.items() if v not in (None, "")}
  task = fields.pop("task", None)
  if task not in TASKS:
    raise EditError(f"job {line}: task={task!r}: must be one of {', '.join(TASKS)}")
  place = lambda path: os.path.join(base_dir, os.path.expanduser(str(path))) if base_dir else str(path)  # noqa: E731
  out = fields.pop("out", None)
  inputs = {}
  for role in TASK_INPUTS[task]:
    names = (role, *(general for general, roles in _GENERAL_ROLES.items() if role in roles and general != role))
    value = next((fields.pop(name) for name in names if name in fields), None)
    for name in names:
      fields.pop(name, None)
    if value is None:
      raise EditError(f"job {line}: task={task} needs {role}")
    inputs[role] = place(value)
  if out is None:
    raise EditError(f"job {line}: no out (the mp4 to write)")
  options = {}
  for name in JOB_OPTIONS[task]:
    if name in fields:
      value = fields.pop(name)
      if name == "relative":
        options[name] = _parse_bool(value, f"job {line}: {name}")
      elif name == "face_reference":
        options[name] = place(value)
      elif name == "paste":
        if value not in PASTES:
          raise EditError(f"job {line}: paste={value!r}: must be one of {', '.join(PASTES)}")
        options[name] = value
      else:
        options[name] = parse_face(value)
  if fields:
    known = ("task", "out", *TASK_INPUTS[task], *JOB_OPTIONS[task])
    raise EditError(f"job {line}: unknown field(s) {', '.join(sorted(fields))} for task={task} "
                    f"(known: {', '.join(known)})")
  return Job(line, task, inputs, place(out), options)


def read_jobs(path) -> tuple[list[Job], list[JobResult]]:
  """The jobs of a jobs file, and a failed result for each line that is not a job.

  The file is JSON lines (one object per line: {"task": "swap", "source": "me.jpg", "target":
  "clip.mp4", "out": "swap.mp4"}; a `.jsonl` / `.json` name, or a first line starting with "{")
  or CSV with a header row naming the fields (task,source,target,out,...; empty cells are absent).
  Blank lines and lines starting with "#" are skipped. Relative paths are taken from the jobs
  file's folder. Line numbers are the file's.

  Raises:
    EditError: the file cannot be read, or holds no job at all.
  """
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as error:
    raise EditError(f"--jobs={path}: cannot be read ({cli.one_line(error)})") from None
  base_dir = os.path.dirname(os.path.abspath(path))
  numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
              if line.strip() and not line.lstrip().startswith("#")]
  if not numbered:
    raise EditError(f"--jobs={path}: holds no job (JSON lines or CSV with a header row)")
  as_json = path.lower().endswith((".jsonl", ".json")) or numbered[0][1].lstrip().startswith("{")
  jobs, failed = [], []
  if as_json:
    rows = []
    for number, line in numbered:
      try:
        rows.append((number, json.loads(line)))
      except json.JSONDecodeError as error:
        failed.append(JobResult(number, "", "", None, f"--jobs={path} line {number}: not JSON ({error.msg})"))
  else:
    header_number, header = numbered[0]
    names = [name.strip() for name in next(csv.reader([header]))]
    rows = []
    for number, line in numbered[1:]:
      cells = next(csv.reader(io.StringIO(line)), [])
      if len(cells) > len(names):
        failed.append(JobResult(number, "", "", None, f"--jobs={path} line {number}: {len(cells)} fields, but "
                                f"the header (line {header_number}) names {len(names)}"))
        continue
      rows.append((number, dict(zip(names, (cell.strip() for cell in cells)))))
  for number, fields in rows:
    try:
      jobs.append(job_from_dict(fields, number, base_dir))
    except EditError as error:
      message = str(error).replace(f"job {number}:", f"--jobs={path} line {number}:")
      failed.append(JobResult(number, str(fields.get("task", "")) if isinstance(fields, dict) else "",
                              str(fields.get("out", "")) if isinstance(fields, dict) else "", None, message))
  return jobs, sorted(failed, key=lambda result: result.line)


def keep_pixels(edited: np.ndarray, original: np.ndarray, region: np.ndarray) -> np.ndarray:
  """`edited` with `original`'s pixels where `region` [H, W] in [0, 1] is 1 (blended in between)."""
  weight = region[..., None].astype(np.float32)
  return np.rint(edited * (1.0 - weight) + original * weight).astype(np.uint8)


def check_output(out, **inputs) -> str:
  """The output path of an edit, checked before any work: a writable file path that is none of the
  inputs (the same path, or the same file through a link).

  Raises:
    EditError: naming the path and the problem.
  """
  try:
    return files.check_output_file(out, inputs.values())
  except files.OutputPathError as error:
    names = {os.fspath(path): role for role, path in inputs.items() if path is not None}
    message = str(error)
    for path, role in names.items():
      message = message.replace(f"({path})", f"(--{role}={path})")
    raise EditError(message) from None


def even_sized(frame: np.ndarray) -> np.ndarray:
  """The frame with its last row / column repeated where its height / width is odd (H.264 in
  yuv420p needs even sizes)."""
  height, width = frame.shape[:2]
  if height % 2 == 0 and width % 2 == 0:
    return frame
  return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def frame_of(prepared: Prepared, index: int) -> np.ndarray:
  """The full source frame of the `index`-th tracked frame of an input."""
  if prepared.is_image:
    return clip_lib.read_image(prepared.path)
  number = int(prepared.fitted.frames[index])
  return next(video_lib.read_frames(prepared.path, start=number, stop=number + 1)).image


def crop_of(prepared: Prepared, index: int, size: int) -> np.ndarray:
  """The [S, S, 3] crop of the `index`-th tracked frame of an input."""
  return crop_lib.crop_image(frame_of(prepared, index), prepared.fitted.box, size)


def relative_cameras(source_camera: np.ndarray, driving_cameras: np.ndarray) -> np.ndarray:
  """[K, 6] cameras: the source's camera moved as the driving face moved since its first frame.

  Rotations compose (R_k = R_drive,k R_drive,0^T R_source: the driving head's turn since frame 0,
  applied to the source head where it is), so a large turn of a non-frontal source stays a rigid
  rotation instead of the distortion of added Euler angles. The scale is multiplied by the driving
  face's, and the translation moves by the driving face's, in proportion to the two faces' sizes.
  """
  source = np.asarray(source_camera, np.float32)
  driving = np.asarray(driving_cameras, np.float32)
  turn = np.asarray(face3d.euler_to_matrix(driving[:, :3])) @ np.asarray(face3d.euler_to_matrix(driving[0, :3])).T
  rotation = turn @ np.asarray(face3d.euler_to_matrix(source[:3]))
  ratio = source[3] / driving[0, 3]
  scale = driving[:, 3] * ratio
  translation = source[4:] + (driving[:, 4:] - driving[0, 4:]) * ratio
  return np.concatenate([np.asarray(face3d.matrix_to_euler(rotation)), scale[:, None], translation], axis=1)


def reenactment_motion(source: Prepared, driving: Prepared, relative: bool):
  """Per driving frame k: the expression and camera the reenacted face takes.

  Absolute: the driving frame's own expression and camera. Relative (first-order-model's relative
  mode): the source's frontal frame moved as the driving face moved since its first frame, its
  expression offset by the driving expression's change and its camera by `relative_cameras`.
  """
  fit = driving.fitted.fit
  if not relative:
    return (lambda k: fit.exp_coeffs[k]), (lambda k: fit.cameras[k])
  base = source.frontal_index()
  source_exp = source.fitted.fit.exp_coeffs[base]
  cameras = relative_cameras(source.fitted.fit.cameras[base], fit.cameras)
  return (lambda k: source_exp + fit.exp_coeffs[k] - fit.exp_coeffs[0]), (lambda k: cameras[k])


# ----- command line -----

_TASK = flags.DEFINE_enum("task", None, TASKS, "swap, reenact or disentangle")
_CHECKPOINT, _FACE_MODEL, _OUT, _COMPILATION_CACHE = cli.shared_flags()
_SOURCE = flags.DEFINE_string("source", None, "swap: the identity (picture or video); reenact: identity and background")
_TARGET = flags.DEFINE_string("target", None, "swap: the video whose face is replaced (everything else is kept)")
_DRIVING = flags.DEFINE_string("driving", None, "reenact: the video giving pose and expression (and the timeline)")
_IDENTITY = flags.DEFINE_string("identity", None, "the identity input (= swap's --source)")
_EXPRESSION = flags.DEFINE_string("expression", None, "disentangle: the expression input (picture or video)")
_APPEARANCE = flags.DEFINE_string("appearance", None, "pose and background (= swap's --target, reenact's --driving)")
_RELATIVE = flags.DEFINE_bool("relative", False, "reenact: motion relative to the driving video's first frame")
_BATCH = flags.DEFINE_integer("batch_size", 8, "frames per network call")
_LABEL = flags.DEFINE_bool("label", False, "draw a visible SYNTHETIC label on the frames")
_MARK = flags.DEFINE_bool("mark_synthetic", True, "tag the mp4's metadata as synthetic")
_PROGRESS = flags.DEFINE_bool("progress", True, "progress bars on stderr while tracking and editing")
_CACHE = flags.DEFINE_string("cache_dir", None, "where input tracks are cached (default ~/.cache/tfvgan_jax/edit)")
_FACE = flags.DEFINE_string("face", "longest", "which face of the target / driving / appearance video to edit: "
                            "longest (the longest track), N (the N-th of --list_faces), or all (swap, disentangle)")
_FACE_REFERENCE = flags.DEFINE_string("face_reference", None, "a picture of the person to edit: the face track "
                                      "whose fitted identity is closest to it (overrides --face)")
_LIST_FACES = flags.DEFINE_bool("list_faces", False, "print the face tracks of the target / driving / appearance "
                                "video (number, frames, mean box, a thumbnail file) and exit")
_PASTE = flags.DEFINE_enum("paste", None, PASTES, "what of the output crop goes into the frame: face (its mask) or "
                           "crop (all of it, feathered at the crop's border); default: crop for reenact, face for "
                           "swap and disentangle")
_OCCLUDERS = flags.DEFINE_list("occluders", ["hands"], "what stays in front of the edited face, the input's pixels "
                               "kept there (swap, disentangle): hands, or none (an empty list)")
_DETECTOR = flags.DEFINE_enum("detector", "short", DETECTORS, "face detector: short (faces near the camera), full "
                              "(the full-range model: small and distant faces) or both")
_JOBS = flags.DEFINE_string("jobs", None, "many edits in one process: a JSON-lines or CSV file of jobs (task, the "
                            "task's inputs, out); one result line per job, failed jobs reported, the rest done")


def _inputs(task: str) -> dict:
  """The task's inputs from the per-task flags or the general ones (the first given wins)."""
  pick = lambda *names: next((f.value for f in names if f.value), None)  # noqa: E731
  if task == "swap":
    inputs = {"source": pick(_SOURCE, _IDENTITY), "target": pick(_TARGET, _APPEARANCE)}
  elif task == "reenact":
    inputs = {"source": pick(_SOURCE, _IDENTITY), "driving": pick(_DRIVING, _APPEARANCE)}
  else:
    inputs = {"identity": pick(_IDENTITY, _SOURCE), "expression": _EXPRESSION.value,
              "appearance": pick(_APPEARANCE, _TARGET)}
  missing = [name for name, value in inputs.items() if not value]
  if missing:
    raise EditError(f"--task={task} needs {', '.join('--' + m for m in missing)}")
  return inputs


def _settings() -> EditSettings:
  return EditSettings(batch_size=_BATCH.value, relative=_RELATIVE.value, label=_LABEL.value,
                      mark_synthetic=_MARK.value, progress=_PROGRESS.value,
                      occluders=tuple(name for name in _OCCLUDERS.value if name not in ("", "none")),
                      detector=_DETECTOR.value)


def _run_jobs(path: str) -> None:
  """`--jobs`: every job of the file, one JSON result line each on stdout; exits 1 if any failed."""
  jobs, failed = read_jobs(path)
  editor = Editor(_CHECKPOINT.value, face_model=_FACE_MODEL.value, cache_dir=_CACHE.value, settings=_settings())
  print_result = lambda result: print(json.dumps(result.as_json()), flush=True)  # noqa: E731
  for result in failed:
    print_result(result)
  results = sorted(failed + editor.run_jobs(jobs, on_result=print_result), key=lambda r: r.line)
  bad = [r for r in results if r.error is not None]
  print(f"{len(results) - len(bad)} of {len(results)} jobs done", file=sys.stderr)
  if bad:
    raise EditError(f"--jobs={path}: {len(bad)} of {len(results)} jobs failed (line"
                    f"{'s' if len(bad) > 1 else ''} {', '.join(str(r.line) for r in bad)}: {bad[0].error}"
                    f"{'; ...' if len(bad) > 1 else ''})")


def _list_faces() -> None:
  """`--list_faces`: the face tracks of the video that sets the timeline, one line each."""
  role, path = next(((flag.name, flag.value) for flag in (_TARGET, _DRIVING, _APPEARANCE) if flag.value),
                    (None, None))
  if path is None or not _CHECKPOINT.value:
    raise app.UsageError("--list_faces needs --checkpoint and a video: --target, --driving or --appearance")
  editor = Editor(_CHECKPOINT.value, face_model=_FACE_MODEL.value, cache_dir=_CACHE.value, settings=_settings())
  faces = editor.list_faces(path, role)
  print(f"{len(faces)} face track{'s' if len(faces) > 1 else ''} in {path} (--face=N edits the N-th):")
  for face in faces:
    box = ", ".join(f"{v:.0f}" for v in face.mean_box)
    print(f"  {face.number}: {face.frames} frames ({face.first_frame}-{face.last_frame}), mean box ({box}), "
          f"thumbnail {face.thumbnail}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  compilation.use_cache(_COMPILATION_CACHE.value)  # before anything compiles
  distributed.require_one_process("python -m tfvgan_jax.edit")
  if _JOBS.value:
    if not _CHECKPOINT.value:
      raise app.UsageError("--jobs needs --checkpoint")
    if _TASK.value or _OUT.value:
      raise app.UsageError("--jobs takes each job's task and out from the file, not from --task / --out")
    _run_jobs(_JOBS.value)
    return
  if _LIST_FACES.value:
    _list_faces()
    return
  if not (_TASK.value and _CHECKPOINT.value and _OUT.value):
    raise app.UsageError("--task, --checkpoint and --out are required (or --jobs and --checkpoint)")
  inputs = _inputs(_TASK.value)
  face = parse_face(_FACE.value)
  # Everything that can be checked without loading a model is checked before any work.
  check_output(_OUT.value, **inputs, face_reference=_FACE_REFERENCE.value)
  editor = Editor(_CHECKPOINT.value, face_model=_FACE_MODEL.value, cache_dir=_CACHE.value, settings=_settings())
  options = {"face": face, "face_reference": _FACE_REFERENCE.value, "paste": _PASTE.value}
  report = getattr(editor, _TASK.value)(*inputs.values(), out=_OUT.value, **options)
  print(json.dumps(report._asdict()))
  print(f"wrote {report.out}: {report.frames} frames, {report.edited} edited ({report.occluded} with occluders kept "
        f"in front), {report.passed_through} without a face passed through, in {report.seconds:.1f} s")


if __name__ == "__main__":
  cli.run(main)
