"""One video in, one fitted clip out: track the main face, crop it, fit the morphable model.

The stages, each usable alone (the data_prep jobs and editing both call them):

  track_video    decode (streaming) -> detect / follow faces -> main track -> temporal smoothing.
                 Its result, `FaceTrack`, is what a second run reuses (`cached_track`): it does not
                 depend on the morphable model or the output size.
  fit_track      one stable crop for the clip, the landmarks in crop pixels, and the per-clip fit
                 (one identity, per-frame expression and camera, prep.fit).
  crop_frames    decode again (streaming) and cut the crop of every tracked frame.

A video that cannot be used raises `SkippedVideo` with a short `reason` a batch job counts by
(missing, not_a_file, empty_file, unreadable, too_large, no_video_stream, decode_error, no_frames,
no_face, too_short, face_too_small, fit_failed) and a message naming the file.

A morphable model on the Face Mesh topology (468 vertices whose landmark list is
`topology.IBUG68_FROM_MESH`, as `data_prep.learn_face_model` writes) is fitted to all 468 points;
any other model to the 68 iBUG points.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Optional

import numpy as np
from absl import logging
from etils import epath

from tfvgan_jax import face3d, files
from tfvgan_jax.prep import crop as crop_lib
from tfvgan_jax.prep import fit as fit_lib
from tfvgan_jax.prep import landmarks as landmarks_lib
from tfvgan_jax.prep import topology
from tfvgan_jax.prep import track as track_lib
from tfvgan_jax.prep import video as video_lib

NUM_MESH_POINTS = 468
# Pictures above this many pixels are refused before decoding (PIL's own decompression-bomb
# threshold): 89 megapixels is 270 MB of RGB.
MAX_IMAGE_PIXELS = 89_478_485
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Bumped when a change to the stages makes cached tracks stale.
_TRACK_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PrepSettings:
  """Everything that decides a prepared clip, besides the input and the models.

  Attributes:
    image_size: S, the side of the output crops in pixels.
    track: detection cadence and thresholds (prep.track.TrackConfig).
    smooth: sigma in frames of the zero-lag Gaussian smoothing of the landmarks over time; 1.0 takes
      the frame-to-frame jitter of the landmark model out while keeping a blink (3-5 frames at 25
      fps); 0 turns it off.
    smooth_motion: the face speed, in face sizes per frame, at which the smoothing is half as wide
      (prep.track.motion_adaptive_smoothing); 0 keeps it fixed. Editing uses 0.02, which keeps fast
      head turns that a fixed sigma of 1 rounds off (edits of six real clips were steadier than
      frame-by-frame fitting on all six with it, on five of six without); training data keeps the
      fixed Gaussian, whose fits were measured steadier (pose jitter on d12: 0.7 vs 1.3 degrees).
    join_gap: join the main face's track with a later one that starts at most this many frames after
      it ends, in about the same place (prep.track.join_tracks): the same face found again after an
      occlusion. 0 (training data, whose clips must be consecutive frames) never joins; editing joins
      gaps of up to 2 s so that a re-found face is edited too.
    crop_scale: the crop's side over the face box's side (1.6: the face, hair and some background),
      at most the frame's shorter side (prep.crop.stable_crop).
    min_frames: a clip whose main face track is shorter is skipped (too_short).
    max_frames: read at most this many frames of each video (0: all).
    min_face_size: median face box side in source pixels below which the video is skipped
      (face_too_small): upscaled crops of tiny faces teach blur.
  """

  image_size: int = 256
  track: track_lib.TrackConfig = track_lib.TrackConfig()
  smooth: float = 1.0
  smooth_motion: float = 0.0
  join_gap: int = 0
  crop_scale: float = 1.6
  min_frames: int = 8
  max_frames: int = 0
  min_face_size: float = 48.0

  def __post_init__(self):
    if self.image_size < 8:
      raise ValueError(f"image_size must be >= 8, got {self.image_size}")
    if self.min_frames < 1:
      raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")
    if self.max_frames < 0:
      raise ValueError(f"max_frames must be >= 0, got {self.max_frames}")
    if self.join_gap < 0:
      raise ValueError(f"join_gap must be >= 0, got {self.join_gap}")
    if self.smooth < 0 or self.smooth_motion < 0:
      raise ValueError(f"smooth and smooth_motion must be >= 0, got {self.smooth}, {self.smooth_motion}")

  def track_key(self) -> dict:
    """The settings a cached `FaceTrack` depends on."""
    return {"track": dataclasses.asdict(self.track), "smooth": self.smooth, "smooth_motion": self.smooth_motion,
            "join_gap": self.join_gap, "max_frames": self.max_frames}


class SkippedVideo(Exception):
  """A video left out, with a short `reason` to count by and a message naming the file."""

  def __init__(self, path, reason: str, problem: str):
    self.path, self.reason, self.problem = os.fspath(path), reason, problem
    super().__init__(f"{self.path}: {problem} ({reason})")


class FaceTrack(NamedTuple):
  """The main face of a video, followed and smoothed.

  Attributes:
    frames: [T] int64 increasing frame numbers, consecutive unless `PrepSettings.join_gap` joined
      segments of the face.
    points: [T, 468, 3] float32 smoothed Face Mesh landmarks, source pixels (z toward the camera).
    frame_size: (width, height) of the source frames.
    fps: the video's frame rate.
    frames_decoded: how many frames were read.
    source: the video's path.
  """

  frames: np.ndarray
  points: np.ndarray
  frame_size: tuple[int, int]
  fps: float
  frames_decoded: int
  source: str


class FittedClip(NamedTuple):
  """A tracked clip cropped and fitted.

  Attributes:
    frames: [T] int64 frame numbers.
    box: the clip's crop square in source pixels.
    crop_to_source: [2, 3] affine, source (x, y) = A @ [u, v, 1].
    landmarks: [T, 68, 2] float32 observed iBUG-68 points in crop pixels.
    fit: the fit (one identity, per-frame expression, cameras in crop pixels, residual in crop px).
    interocular: [T] float32 outer-eye-corner distance of the observed points, crop pixels.
  """

  frames: np.ndarray
  box: crop_lib.CropBox
  crop_to_source: np.ndarray
  landmarks: np.ndarray
  fit: fit_lib.FitResult
  interocular: np.ndarray


def _frames(path, settings: PrepSettings) -> Iterator[video_lib.Frame]:
  return video_lib.read_frames(path, stop=settings.max_frames or None)


def _followed_faces(path, detector, landmarker, settings: PrepSettings,
                    progress: Optional[Callable[..., Iterator]]) -> tuple[list[track_lib.Track], video_lib.VideoInfo, int]:
  """Decodes `path` once: every face track (joined over gaps of `settings.join_gap`), the video's
  info and the number of frames seen."""
  check_input_file(path)
  try:
    info = video_lib.probe(path)
    frames = _frames(path, settings)
    if progress is not None:
      total = min(info.num_frames, settings.max_frames) if settings.max_frames else info.num_frames
      frames = progress(frames, total=total or None)
    tracks, seen = track_lib.track_faces(frames, detector, landmarker, settings.track)
  except video_lib.VideoError as error:
    raise SkippedVideo(path, error.reason, error.problem) from error
  return track_lib.join_tracks(tracks, settings.join_gap), info, seen


def _smoothed(track: track_lib.Track, info: video_lib.VideoInfo, seen: int, path, settings: PrepSettings) -> FaceTrack:
  # Smoothed run by run: nothing is blended across the frames where the face was lost.
  points = np.concatenate([track_lib.motion_adaptive_smoothing(track.points[run], settings.smooth, settings.smooth_motion)
                           for run in track_lib.runs(track.frames)])
  return FaceTrack(track.frames, points, (info.width, info.height), info.fps, seen, os.fspath(path))


def _face_size(track: track_lib.Track) -> float:
  return float(np.median(track_lib.box_size(track_lib.box_of_points(track.points))))


def track_video(path, detector, landmarker, settings: PrepSettings = PrepSettings(),
                progress: Optional[Callable[..., Iterator]] = None) -> FaceTrack:
  """Decodes `path` once and returns its main face track, smoothed.

  `progress` wraps the decoded frames (a progress bar: `tqdm.tqdm`-like, called with the frame
  iterator and `total`, the video's frame count).

  Raises:
    SkippedVideo: the video cannot be read, or its main face is missing, too short or too small.
  """
  tracks, info, seen = _followed_faces(path, detector, landmarker, settings, progress)
  main = track_lib.main_track(tracks)
  if main is None:
    raise SkippedVideo(path, "no_face", f"no face found in {seen} frames")
  if len(main) < settings.min_frames:
    raise SkippedVideo(path, "too_short", f"the longest face track has {len(main)} frames of {seen}, "
                       f"fewer than min_frames={settings.min_frames}")
  size = _face_size(main)
  if size < settings.min_face_size:
    raise SkippedVideo(path, "face_too_small", f"the face is {size:.0f} px, below min_face_size="
                       f"{settings.min_face_size:g}")
  return _smoothed(main, info, seen, path, settings)


def track_all_faces(path, detector, landmarker, settings: PrepSettings = PrepSettings(),
                    progress: Optional[Callable[..., Iterator]] = None) -> list[FaceTrack]:
  """Every face track of `path` with at least `settings.min_frames` frames and a median size of at
  least `settings.min_face_size`, smoothed, longest first (ties: the larger face), so that the
  first is `track_video`'s main track. Up to `settings.track.max_faces` faces are followed at once.

  Raises:
    SkippedVideo: the video cannot be read, or no face track qualifies (no_face).
  """
  tracks, info, seen = _followed_faces(path, detector, landmarker, settings, progress)
  kept = [t for t in tracks if len(t) >= settings.min_frames and _face_size(t) >= settings.min_face_size]
  if not kept:
    found = f"no face found in {seen} frames" if not tracks else (
        f"{len(tracks)} face track(s), none with min_frames={settings.min_frames} frames and a face of at least "
        f"min_face_size={settings.min_face_size:g} px")
    raise SkippedVideo(path, "no_face", found)
  kept.sort(key=lambda t: (len(t), _face_size(t)), reverse=True)
  return [_smoothed(t, info, seen, path, settings) for t in kept]


def is_image(path) -> bool:
  """Whether `path` names a still picture (by its suffix) rather than a video."""
  return os.fspath(path).lower().endswith(IMAGE_SUFFIXES)


def check_input_file(path) -> None:
  """Refuses a path that is not a regular file (a link to one is fine).

  Raises:
    SkippedVideo: missing (also a link whose target is gone) or not_a_file (a folder, a device ...).
  """
  if not os.path.exists(path):
    problem = f"a link to {os.readlink(path)}, which does not exist" if os.path.islink(path) else "no such file"
    raise SkippedVideo(path, "missing", problem)
  if not os.path.isfile(path):
    problem = "is a folder, not a file" if os.path.isdir(path) else "is not a regular file"
    raise SkippedVideo(path, "not_a_file", problem)


def read_image(path) -> np.ndarray:
  """[H, W, 3] uint8 RGB pixels of a picture file.

  Raises:
    SkippedVideo: missing, not a file, unreadable, or larger than MAX_IMAGE_PIXELS (reasons
      missing, not_a_file, unreadable, too_large); the size is checked from the header, before
      anything is decoded.
  """
  from PIL import Image, UnidentifiedImageError
  check_input_file(path)
  try:
    with warnings.catch_warnings():
      # PIL warns from 89 megapixels on; the size is checked here, with the file's name.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      picture = Image.open(path)
    with picture:
      width, height = picture.size
      if width * height > MAX_IMAGE_PIXELS:
        raise SkippedVideo(path, "too_large", f"the picture is {width}x{height} ({width * height / 1e6:.0f} "
                           f"megapixels), more than the {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels accepted")
      return np.asarray(picture.convert("RGB"))
  except Image.DecompressionBombError as error:
    raise SkippedVideo(path, "too_large", f"the picture is too large to decode ({error})") from error
  except (UnidentifiedImageError, OSError) as error:
    raise SkippedVideo(path, "unreadable", f"not a readable picture ({error})") from error


def track_image(path, detector, landmarker, refinements: int = 1) -> FaceTrack:
  """The largest face of a picture as a one-frame `FaceTrack`.

  The landmarks are taken again `refinements` times from the region their own previous estimate
  gives (as on the frames of a video), which centres and levels the crop better than the
  detector's box.

  Raises:
    SkippedVideo: unreadable, or no face (no_face).
  """
  image = read_image(path)
  found = detector(image)
  if not found:
    raise SkippedVideo(path, "no_face", "no face found in the picture")
  largest = max(found, key=lambda d: float(np.prod(np.asarray(d.box[2:]) - np.asarray(d.box[:2]))))
  result = landmarker(image, landmarks_lib.roi_from_detection(largest))
  for _ in range(refinements):
    result = landmarker(image, landmarks_lib.roi_from_landmarks(result.points))
  points = np.asarray(result.points, np.float32)[None]
  return FaceTrack(np.zeros(1, np.int64), points, (image.shape[1], image.shape[0]), 0.0, 1, os.fspath(path))


def _file_identity(path) -> dict:
  stat = os.stat(path)
  return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def track_cache_key(path, settings: PrepSettings, model_hashes: tuple[str, ...], file_identity=None) -> str:
  """A name for the cached track of `path`: its identity, the tracking settings, the models.

  The file's identity is its absolute path, size and modification time, or `file_identity` (a
  JSON-able dict) for a file fetched from elsewhere.
  """
  identity = {"file": file_identity or _file_identity(path), "settings": settings.track_key(), "models": list(model_hashes),
              "version": _TRACK_CACHE_VERSION}
  digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
  return f"{safe_file_name(os.path.splitext(os.path.basename(path))[0])[:48]}-{digest}"


def safe_file_name(text: str) -> str:
  """`text` with every character but letters, digits, '-' and '_' replaced by '_'."""
  return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def write_npz_atomically(path: epath.Path, **arrays) -> None:
  """Writes an .npz atomically (a temporary name, then a rename), so a killed job leaves no half file."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  if "://" in os.fspath(path):
    # Object stores make an object visible only once it is completely written.
    epath.Path(path).write_bytes(buffer.getvalue())
  else:
    files.write_bytes(path, buffer.getvalue())


def _through_cache(entry: epath.Path, path, compute: Callable[[], Any], encode: Callable[[Any], dict],
                   decode: Callable[[Any], Any]):
  """compute() through one cache entry (an .npz): a stored result is decoded, a stored skip raised
  again, an unreadable entry (a damaged file) treated as absent and rewritten, with a warning.

  Raises:
    SkippedVideo: from `compute`, or recorded in the entry.
  """
  if entry.exists():
    skipped = None
    try:
      with np.load(io.BytesIO(entry.read_bytes()), allow_pickle=False) as stored:
        if "skip_reason" in stored:
          skipped = SkippedVideo(path, str(stored["skip_reason"]), str(stored["skip_problem"]))
        else:
          return decode(stored)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
      logging.warning("%s: unreadable track cache entry (%s: %s); tracking %s again", entry, type(error).__name__,
                      error, os.fspath(path))
    if skipped is not None:
      raise skipped
  entry.parent.mkdir(parents=True, exist_ok=True)
  try:
    result = compute()
  except SkippedVideo as skipped:
    write_npz_atomically(entry, skip_reason=np.str_(skipped.reason), skip_problem=np.str_(skipped.problem))
    raise
  write_npz_atomically(entry, **encode(result))
  return result


def cached_track(path, detector, landmarker, settings: PrepSettings, cache_dir, model_hashes=(),
                 file_identity=None, progress: Optional[Callable[..., Iterator]] = None) -> FaceTrack:
  """`track_video` through a cache folder: a second call on an unchanged file reads the result.

  A skip is cached too (its reason and message), so a re-run does not decode a faceless video again.
  `model_hashes` (of the detector and landmark model files) are part of the key; `file_identity`
  stands for the file's own (see `track_cache_key`). An entry that cannot be read (a damaged file)
  is treated as absent: the video is tracked again and the entry rewritten, with a warning.
  """
  check_input_file(path)
  entry = epath.Path(cache_dir) / f"{track_cache_key(path, settings, tuple(model_hashes), file_identity)}.npz"
  return _through_cache(
      entry, path, lambda: track_video(path, detector, landmarker, settings, progress),
      lambda track: dict(frames=track.frames, points=track.points, frame_size=np.asarray(track.frame_size),
                         fps=np.float64(track.fps), frames_decoded=np.int64(track.frames_decoded)),
      lambda stored: FaceTrack(stored["frames"], stored["points"], tuple(int(v) for v in stored["frame_size"]),
                               float(stored["fps"]), int(stored["frames_decoded"]), os.fspath(path)))


def cached_faces(path, detector, landmarker, settings: PrepSettings, cache_dir, model_hashes=(),
                 progress: Optional[Callable[..., Iterator]] = None) -> list[FaceTrack]:
  """`track_all_faces` through a cache folder (as `cached_track`: skips are cached too, a damaged
  entry is made again)."""
  check_input_file(path)
  entry = epath.Path(cache_dir) / f"{track_cache_key(path, settings, tuple(model_hashes))}-faces.npz"

  def encode(faces):
    arrays = {f"{name}_{i}": value for i, face in enumerate(faces)
              for name, value in (("frames", face.frames), ("points", face.points))}
    return dict(count=np.int64(len(faces)), frame_size=np.asarray(faces[0].frame_size), fps=np.float64(faces[0].fps),
                frames_decoded=np.int64(faces[0].frames_decoded), **arrays)

  def decode(stored):
    return [FaceTrack(stored[f"frames_{i}"], stored[f"points_{i}"], tuple(int(v) for v in stored["frame_size"]),
                      float(stored["fps"]), int(stored["frames_decoded"]), os.fspath(path))
            for i in range(int(stored["count"]))]

  return _through_cache(entry, path, lambda: track_all_faces(path, detector, landmarker, settings, progress),
                        encode, decode)


def on_mesh_topology(model: face3d.MorphableModel) -> bool:
  """Whether `model` is a morphable model on the 468-point Face Mesh topology."""
  return (model.num_vertices == NUM_MESH_POINTS
          and np.array_equal(np.asarray(model.landmarks), topology.IBUG68_FROM_MESH))


def fit_track(track: FaceTrack, model: face3d.MorphableModel, settings: PrepSettings = PrepSettings(),
              fit_config: Optional[fit_lib.FitConfig] = None, per_frame: bool = False) -> FittedClip:
  """Chooses the clip's crop and fits `model` to the track's landmarks in crop pixels.

  With `per_frame`, every frame is fitted alone (its own identity, no temporal smoothness): the
  frame-by-frame baseline that the per-clip fit is measured against. Its `fit.id_coeffs` is then
  the first frame's.

  Raises:
    SkippedVideo: the fit did not converge to finite values (fit_failed).
  """
  size = settings.image_size
  box = crop_lib.stable_crop(track.points, track.frame_size, settings.crop_scale)
  mesh_points = crop_lib.to_crop(track.points, box, size)
  landmarks = mesh_points[:, topology.IBUG68_FROM_MESH]
  if on_mesh_topology(model):
    observed, vertex_ids = mesh_points, np.arange(NUM_MESH_POINTS)
  else:
    observed, vertex_ids = landmarks, np.asarray(model.landmarks)
  config = fit_config or fit_lib.FitConfig()
  if per_frame:
    frames = [fit_lib.fit_clip(model, observed[t:t + 1], vertex_ids=vertex_ids, config=config)
              for t in range(len(observed))]
    fit = fit_lib.FitResult(frames[0].id_coeffs, *(np.concatenate(parts) for parts in zip(*(f[1:] for f in frames))))
  else:
    fit = _fit_with_gaps(model, track.frames, observed, vertex_ids, config)
  values = (fit.id_coeffs, fit.exp_coeffs, fit.cameras, fit.residual)
  if not all(np.all(np.isfinite(np.asarray(v))) for v in values):
    raise SkippedVideo(track.source, "fit_failed", "the fit produced non-finite coefficients")
  return FittedClip(track.frames, box, crop_lib.crop_to_source(box, size), landmarks, fit,
                    np.asarray(fit_lib.interocular_distance(landmarks), np.float32))


def _fit_with_gaps(model, frames: np.ndarray, observed: np.ndarray, vertex_ids, config) -> fit_lib.FitResult:
  """`fit_lib.fit_clip` of a track whose frame numbers may skip (joined tracks): the missing frames
  enter as frames without landmarks, so the temporal terms span a gap as the gap's length of steps
  (the fit interpolates across it) instead of as one step; the tracked frames' results come back."""
  offsets = np.asarray(frames) - int(frames[0])
  if offsets[-1] == len(frames) - 1:
    return fit_lib.fit_clip(model, observed, vertex_ids=vertex_ids, config=config)
  full = np.full((int(offsets[-1]) + 1, *observed.shape[1:]), np.nan, np.float32)
  full[offsets] = observed
  valid = np.zeros(len(full), bool)
  valid[offsets] = True
  fit = fit_lib.fit_clip(model, full, vertex_ids=vertex_ids, valid=valid, config=config)
  return fit_lib.FitResult(fit.id_coeffs, fit.exp_coeffs[offsets], fit.cameras[offsets], fit.residual[offsets])


def crop_frames(path, track: FaceTrack, box: crop_lib.CropBox, size: int) -> Iterator[tuple[int, np.ndarray]]:
  """Decodes `path` again and yields (frame number, [S, S, 3] uint8 crop) for the track's frames."""
  first, last = int(track.frames[0]), int(track.frames[-1])
  wanted = set(track.frames.tolist())
  try:
    for frame in video_lib.read_frames(path, start=first, stop=last + 1):
      if frame.index in wanted:
        yield frame.index, crop_lib.crop_image(frame.image, box, size)
  except video_lib.VideoError as error:
    raise SkippedVideo(path, error.reason, error.problem) from error
