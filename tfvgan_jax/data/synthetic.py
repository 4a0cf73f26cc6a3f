"""A synthetic talking-head corpus with ground truth, rendered from a morphable model.

Each video is a random identity with its own skin tone, light and background, whose expression
and head pose follow smooth random trajectories at plausible speeds (talking jaw, occasional
blinks, head turns well under 1 rad/s). Frames are rendered by the project's rasterizer with
Lambert shading, 2x supersampled, so the TRUE coefficients and cameras of every frame are known:
the corpus is the ground truth for fitting tests and result-quality checks.

Everything is a deterministic function of (model, seed, frame count, size):

  video = sample_video(model, seed, num_frames, size)     # coefficients, cameras, appearance
  frames = render_frames(model, video.appearance, video.id_coeffs, video.exp_coeffs,
                         video.cameras, size)             # [T, S, S, 3] uint8

and `render_frames` on a record's stored coefficients and camera reproduces its image.

Camera vectors are [pitch, yaw, roll, scale, tx, ty] in pixels of the S x S frame
(`face3d.Camera.from_vector`).
"""

from __future__ import annotations

import functools
import shutil
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from PIL import Image

from tfvgan_jax import face3d, files, render
from tfvgan_jax.data import records

FPS = 25.0
SUPERSAMPLE = 2

# Expression indices of the procedural model (face3d.EXPRESSION_NAMES); other models get generic
# smooth trajectories on every coefficient.
_JAW_OPEN, _BLINK_LEFT, _BLINK_RIGHT = 0, 6, 7
# A blink's lid coefficient over consecutive frames (3 closes the lid fully).
_BLINK_PROFILE = np.array([1.0, 2.6, 3.0, 2.4, 1.2, 0.4])


class Appearance(NamedTuple):
  """How one video looks, besides its shape and motion.

  Attributes:
    tint: [3] multiplier of the model's albedo (skin tone and colour cast).
    light: [3] unit direction toward the light, camera space (x right, y up, z to the viewer).
    ambient: scalar ambient light; the diffuse part is 1 - ambient.
    background: [S, S, 3] uint8 static background.
  """

  tint: np.ndarray
  light: np.ndarray
  ambient: float
  background: np.ndarray


class SyntheticVideo(NamedTuple):
  """Ground truth of one synthetic video of T frames.

  Attributes:
    id_coeffs: [K_id] float32, one identity for the whole video.
    exp_coeffs: [T, K_exp] float32.
    cameras: [T, 6] float32 camera vectors in pixels of the S x S frame.
    appearance: the video's `Appearance`.
  """

  id_coeffs: np.ndarray
  exp_coeffs: np.ndarray
  cameras: np.ndarray
  appearance: Appearance


def smooth_signal(rng: np.random.Generator, num_frames: int, channels: int, min_hz: float, max_hz: float) -> np.ndarray:
  """[T, C] zero-mean smooth random signals with peak amplitude about 1.

  Each channel is a sum of three sinusoids with random frequencies in [min_hz, max_hz] and phases,
  so its speed is bounded by 2 pi max_hz per second per unit of amplitude.
  """
  t = np.arange(num_frames)[:, None, None] / FPS
  freq = rng.uniform(min_hz, max_hz, size=(1, channels, 3))
  phase = rng.uniform(0, 2 * np.pi, size=(1, channels, 3))
  weight = rng.uniform(0.5, 1.0, size=(1, channels, 3))
  weight /= weight.sum(-1, keepdims=True)
  return np.sum(weight * np.sin(2 * np.pi * freq * t + phase), axis=-1)


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
  """[S, S, 3] uint8: a random linear gradient with smooth coloured noise and soft blobs."""
  angle = rng.uniform(0, 2 * np.pi)
  ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
  ramp = (np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5) + 0.5)[..., None]
  colors = rng.uniform(0.1, 0.9, size=(2, 3))
  image = colors[0] * (1 - ramp) + colors[1] * ramp
  cells = int(rng.integers(3, 9))
  noise = rng.uniform(-1, 1, size=(cells, cells, 3)).astype(np.float32)
  noise = np.stack([np.asarray(Image.fromarray(noise[..., c]).resize((size, size), Image.BICUBIC)) for c in range(3)], -1)
  image = image + rng.uniform(0.05, 0.2) * noise
  for _ in range(int(rng.integers(0, 4))):
    cx, cy = rng.uniform(0, 1, 2)
    radius = rng.uniform(0.05, 0.25)
    blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius ** 2))[..., None]
    image = image * (1 - 0.6 * blob) + 0.6 * blob * rng.uniform(0, 1, 3)
  return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def random_appearance(rng: np.random.Generator, size: int) -> Appearance:
  brightness = rng.uniform(0.55, 1.15)
  tint = brightness * np.exp(rng.normal(0.0, 0.06, size=3))
  light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(0.0, 0.6), 1.0])
  return Appearance(
      tint=tint.astype(np.float32),
      light=(light / np.linalg.norm(light)).astype(np.float32),
      ambient=float(rng.uniform(0.35, 0.55)),
      background=random_background(rng, size),
  )


def expression_trajectory(rng: np.random.Generator, num_frames: int, num_exp: int, talking: bool) -> np.ndarray:
  """[T, K_exp]: slow random expressions; for the procedural model also a talking jaw and blinks."""
  exp = 0.5 * smooth_signal(rng, num_frames, num_exp, 0.05, 0.5) + rng.normal(0, 0.3, size=num_exp)
  if talking and num_exp > _BLINK_RIGHT:
    # Speech opens the jaw at 2-5 Hz syllable rates, gated by slower phrases.
    syllables = 0.5 + 0.5 * smooth_signal(rng, num_frames, 1, 2.0, 5.0)[:, 0]
    phrases = np.clip(0.6 + smooth_signal(rng, num_frames, 1, 0.1, 0.4)[:, 0], 0, 1)
    exp[:, _JAW_OPEN] = 2.2 * syllables * phrases
    blinks = np.zeros(num_frames)
    frame = int(rng.integers(0, int(2 * FPS)))
    while frame < num_frames:
      span = _BLINK_PROFILE[: num_frames - frame]
      blinks[frame:frame + len(span)] = np.maximum(blinks[frame:frame + len(span)], span)
      frame += int(rng.uniform(1.5, 5.0) * FPS)
    exp[:, _BLINK_LEFT] = blinks
    exp[:, _BLINK_RIGHT] = blinks
  return exp.astype(np.float32)


def camera_trajectory(rng: np.random.Generator, num_frames: int, size: int) -> np.ndarray:
  """[T, 6] cameras: head turns and nods around a random base pose, small zoom and drift.

  Peak angular speed is 2 pi * 0.6 Hz * amplitude: under 1 rad/s for yaw, less for pitch and roll.
  """
  base = np.array([rng.uniform(-0.15, 0.15), rng.uniform(-0.35, 0.35), rng.uniform(-0.1, 0.1)])
  motion = smooth_signal(rng, num_frames, 3, 0.05, 0.6) * np.array([0.1, 0.25, 0.06])
  pose = base + motion
  # The face (about 2 x 2.5 model units) covers about 60% of the frame's height, as in aligned crops.
  scale = size * rng.uniform(0.26, 0.32) * (1 + 0.04 * smooth_signal(rng, num_frames, 1, 0.05, 0.3)[:, 0])
  centre = size * (0.5 + rng.uniform(-0.04, 0.04, size=2)) + size * 0.02 * smooth_signal(rng, num_frames, 2, 0.05, 0.4)
  # The model's origin sits between the eyes and the mouth, a little above the middle of the face.
  centre[:, 1] -= 0.08 * scale
  return np.concatenate([pose, scale[:, None], centre], axis=1).astype(np.float32)


def sample_video(model: face3d.MorphableModel, seed: int, num_frames: int, size: int) -> SyntheticVideo:
  """The ground truth of one video, a deterministic function of its arguments."""
  rng = np.random.default_rng(seed)
  id_coeffs = np.clip(rng.normal(size=model.num_id), -2.5, 2.5).astype(np.float32)
  appearance = random_appearance(rng, size)
  talking = model.name.startswith(face3d.procedural.NAME)
  exp_coeffs = expression_trajectory(rng, num_frames, model.num_exp, talking)
  cameras = camera_trajectory(rng, num_frames, size)
  return SyntheticVideo(id_coeffs, exp_coeffs, cameras, appearance)


def vertex_normals(vertices: jax.Array, triangles: jax.Array) -> jax.Array:
  """[..., N, 3] unit normals: area-weighted sums of the adjacent triangles' normals."""
  corners = jnp.take(vertices, triangles, axis=-2)  # [..., F, 3, 3]
  face = jnp.cross(corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :])
  summed = jnp.zeros_like(vertices)
  for k in range(3):
    summed = summed.at[..., triangles[:, k], :].add(face)
  return summed / jnp.maximum(jnp.linalg.norm(summed, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("size",))
def _render(model, tint, light, ambient, background, id_coeffs, exp_coeffs, cameras, size):
  hi = size * SUPERSAMPLE
  verts = face3d.vertices(model, id_coeffs, exp_coeffs)  # [T, N, 3]
  camera = face3d.Camera.from_vector(cameras)
  screen = face3d.project(verts, camera.replace(scale=camera.scale * SUPERSAMPLE,
                                                translation=camera.translation * SUPERSAMPLE))
  rotation = face3d.euler_to_matrix(camera.pose)  # [T, 3, 3]
  normals = jnp.einsum("tij,tnj->tni", rotation, vertex_normals(verts, model.triangles))
  # Lambert shading per vertex, interpolated per pixel (Gouraud): smooth at any mesh density.
  shade = ambient + (1 - ambient) * jnp.maximum(jnp.einsum("tnc,c->tn", normals, light), 0.0)
  color = jnp.clip(model.albedo * tint, 0, 1) * shade[..., None]
  frags = render.rasterize(screen, model.triangles, hi, hi)
  face = jax.vmap(render.interpolate_attributes, in_axes=(0, 0, None))(frags, color, model.triangles)
  back = jax.image.resize(background.astype(jnp.float32) / 255.0, (hi, hi, 3), "linear")
  image = jnp.where(frags.mask[..., None], face, back)
  image = image.reshape(-1, size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(2, 4))
  coverage = frags.mask.astype(jnp.float32).reshape(-1, size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(2, 4))
  return jnp.clip(jnp.round(image * 255), 0, 255).astype(jnp.uint8), coverage, frags.overflow


def render_frames(model: face3d.MorphableModel, appearance: Appearance, id_coeffs, exp_coeffs, cameras, size: int) -> np.ndarray:
  """Renders frames of one video.

  Args:
    model: a morphable model with albedo.
    appearance: the video's `Appearance`.
    id_coeffs: [K_id]; exp_coeffs: [T, K_exp]; cameras: [T, 6] in pixels of the S x S frame.
    size: S.

  Returns:
    [T, S, S, 3] uint8.
  """
  return render_frames_with_coverage(model, appearance, id_coeffs, exp_coeffs, cameras, size)[0]


def render_frames_with_coverage(model: face3d.MorphableModel, appearance: Appearance, id_coeffs, exp_coeffs, cameras,
                                size: int) -> tuple[np.ndarray, np.ndarray]:
  """`render_frames` and the face's coverage of each pixel.

  Returns:
    frames [T, S, S, 3] uint8, and coverage [T, S, S] float32 in [0, 1]: the fraction of the
    pixel's supersamples that the face covers (the true face mask).
  """
  if model.albedo is None:
    raise ValueError(f"model {model.name!r} has no albedo: synthetic rendering needs per-vertex colour")
  exp_coeffs = np.asarray(exp_coeffs, np.float32)
  id_coeffs = np.broadcast_to(np.asarray(id_coeffs, np.float32), exp_coeffs.shape[:-1] + (model.num_id,))
  frames, coverage, overflow = _render(model, appearance.tint, appearance.light, appearance.ambient,
                                       appearance.background, id_coeffs, exp_coeffs, np.asarray(cameras, np.float32),
                                       size)
  if np.any(np.asarray(overflow)):
    raise RuntimeError(f"rasterizer buffer overflow rendering {model.name!r} at {size} px: the face fills the frame more than twice")
  return np.asarray(frames), np.asarray(coverage)


def video_seed(seed: int, video: int) -> int:
  """The seed of video `video` of a corpus built with `seed`."""
  return int(np.random.default_rng([seed, video]).integers(1 << 31))


def video_name(seed: int, video: int) -> str:
  return f"synthetic_s{seed}_v{video:05d}"


def corpus_examples(model: face3d.MorphableModel, num_videos: int, num_frames: int, size: int, seed: int):
  """Frame records (`records` fields) of a synthetic corpus, video by video, in frame order.

  Video v is `sample_video(model, video_seed(seed, v), num_frames, size)`; its records hold the
  true coefficients, cameras and projected landmarks, and NaN as fit residual. An image set is a
  corpus of one-frame videos (one frame per identity).
  """
  landmarks = np.asarray(model.landmarks)
  for v in range(num_videos):
    video = sample_video(model, video_seed(seed, v), num_frames, size)
    frames = render_frames(model, video.appearance, video.id_coeffs, video.exp_coeffs, video.cameras, size)
    verts = face3d.vertices(model, video.id_coeffs, video.exp_coeffs)
    points = np.asarray(face3d.project(verts[:, landmarks], face3d.Camera.from_vector(video.cameras)))[..., :2]
    for t in range(num_frames):
      yield {
          "image": frames[t],
          "id_coeffs": video.id_coeffs,
          "exp_coeffs": video.exp_coeffs[t],
          "camera": video.cameras[t],
          "landmarks": points[t],
          "video_id": video_name(seed, v),
          "frame_index": t,
          "crop_to_source": np.array([[1, 0, 0], [0, 1, 0]], np.float32),
          "source_path": f"synthetic://seed={seed}/video={v}",
          "fit_residual": np.float32(np.nan),
      }


def cached_corpus(cache_dir, model: face3d.MorphableModel, num_videos: int, num_frames: int, size: int,
                  seed: int, log=print):
  """The synthetic corpus as a frame dataset in `cache_dir`, built on first use.

  The dataset's name encodes every argument, so a changed setting builds a new corpus beside the
  old one instead of silently reusing it. It is written to a staging folder (`.partial-*`) and
  renamed into place, so a build that is interrupted leaves nothing that a later run would mistake
  for a corpus; a later call removes the staging folders that killed builds left. When several
  processes build the same corpus at once, the first to finish wins and the others use its copy.

  Returns:
    The dataset directory (for `records.open_dataset` or `config.data.videos`).
  """
  name = f"synthetic_v{num_videos}_f{num_frames}_s{size}_seed{seed}_{model.name}_{face3d.content_hash(model)[:8]}"
  cache_dir = epath.Path(cache_dir)
  final = cache_dir / name
  dataset = final / "synthetic" / records.DATASET_VERSION
  if final.exists():
    return dataset
  cache_dir.mkdir(parents=True, exist_ok=True)
  log(f"building the synthetic corpus {name} ({num_videos} videos x {num_frames} frames at {size} px) "
      f"in {cache_dir} (once)")
  staging = epath.Path(files.staging_dir(final))
  try:
    examples = corpus_examples(model, num_videos, num_frames, size, seed)
    records.write_dataset(staging, "synthetic", examples, model, size)
    try:
      staging.rename(final)
    except OSError:
      if not final.exists():
        raise
  finally:
    if staging.exists():
      shutil.rmtree(staging, ignore_errors=True)
  return dataset
