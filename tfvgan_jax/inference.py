"""The trained networks applied: what training, editing and evaluation share.

  scene        `render_frames`: recombine S = mean + A_id a_id(X_i) + A_exp a_exp(X_e), project it
               with X_p's camera, texture it from X_i (R), its face mask M^ and the hint M
               (TFVGAN §3.3, UniFaceGAN §III-C); `build_scene`: the same for a training-layout
               batch at t and t-1, with the dense flow F(t -> t-1) of the recombined mesh.
  networks     `Networks` (NNX graph definitions) and the networks as functions of their
               parameters: `blend` (P = E(X_p, M), Y = G(R, P, M^)), `embed`, `discriminate`.
  evaluation   `evaluation_outputs`: Y of a scene with its SSIM against X_p, E_tmp along the flow
               and the images of the evaluation grid.
  checkpoints  `load_checkpoint`: G, E (the EMA copy when the run kept one) and their variables
               (G's averaged batch statistics when the run kept those, `evaluation_variables`),
               the run's config and its face model, without the optimizer states, D or the input
               pipeline.
  ranges       `to_model_range` (uint8 -> [-1, 1]), `to_uint8` ([0, 1] -> uint8).

Nothing here imports the trainer, the input pipeline or the command lines: `tfvgan_jax.edit`
and `tfvgan_jax.evaluate` stand on this module alone.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from tfvgan_jax import face3d, metrics, render
from tfvgan_jax.data.sampling import INTRA, ROLES, TIMES
from tfvgan_jax.models import build_models

# The frame fields the jitted functions read; the rest of a sample (video numbers, landmarks) stays
# on the host.
STEP_FIELDS = ("image", "id_coeffs", "exp_coeffs", "camera")
# Which frame gives the recombined face its expression on inter-video samples: 'appearance' (X_e =
# X_p) or 'expression' (X_e from the sample's third video, UniFaceGAN eq. 2). Intra samples always
# take X_p's (X_p is then the ground truth of L_rec).
EXPRESSION_SOURCES = ("appearance", "expression")


class CheckpointError(ValueError):
  """A checkpoint that cannot be used as asked; the message names the folder and the problem."""


# ---------------------------------------------------------------------------------------------
# Ranges.
# ---------------------------------------------------------------------------------------------


def to_model_range(image: jax.Array) -> jax.Array:
  """uint8 [..., 3] -> float32 in [-1, 1] (the networks' range)."""
  return image.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images) -> np.ndarray:
  """[..., C] floats in [0, 1] -> uint8, rounded to nearest (the edge format of videos, pictures,
  OpenCV, ONNX and Face Mesh). Networks' outputs in [-1, 1] go through `metrics.to_unit_range`."""
  return np.round(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# The scene.
# ---------------------------------------------------------------------------------------------


class FrameInputs(NamedTuple):
  """The network inputs of N frames, row by row, before rendering.

  Attributes:
    identity: X_i [N, S, S, 3] uint8: the texture source.
    id_coeffs: [N, K_id] X_i's identity.
    identity_exp: [N, K_exp] X_i's own expression (its own mesh tells which of its pixels are seen).
    identity_camera: [N, 6] X_i's camera.
    appearance: X_p [N, S, S, 3] uint8: pose, light and background.
    exp_coeffs: [N, K_exp] the expression the output takes (X_e's).
    camera: [N, 6] the camera the output takes (X_p's).
    hint_from_identity: [N] bool: the hint M is X_i (1 - M^) (self-reenactment, reenactment) rather
      than X_p (1 - M^).
    appearance_id, appearance_exp: [N, K_id], [N, K_exp] X_p's own identity and expression (its
      own mesh tells which of its pixels show its face): read only to re-shade R (`render_frames`
      with relight), None otherwise.
  """

  identity: jax.Array
  id_coeffs: jax.Array
  identity_exp: jax.Array
  identity_camera: jax.Array
  appearance: jax.Array
  exp_coeffs: jax.Array
  camera: jax.Array
  hint_from_identity: jax.Array
  appearance_id: Optional[jax.Array] = None
  appearance_exp: Optional[jax.Array] = None


class RenderedFrames(NamedTuple):
  """What the renderer makes of `FrameInputs` (images in [-1, 1]).

  Attributes:
    identity, appearance: X_i and X_p [N, S, S, 3].
    render: R [N, S, S, 3], the recombined face textured from X_i, 0 where there is no texture.
    face_mask: M^ [N, S, S, 1].
    hint: M [N, S, S, 3].
    screen: [N, V, 3] the recombined mesh's screen vertices (for the flow).
    fragments: `render.Fragments` of the recombined mesh.
  """

  identity: jax.Array
  appearance: jax.Array
  render: jax.Array
  face_mask: jax.Array
  hint: jax.Array
  screen: jax.Array
  fragments: Any


def render_frames(face_model: face3d.MorphableModel, frames: FrameInputs, tolerance: float,
                  capacity="auto", relight: bool = False) -> RenderedFrames:
  """Recombines and renders N frames: R, M^ and the hint M (TFVGAN §3.3, UniFaceGAN §III-C).

  Args:
    face_model: the morphable model the coefficients belong to.
    frames: `FrameInputs`.
    tolerance: depth slack of the visibility tests, in pixels (`render.visible`).
    capacity: the rasterizer's extra-chunk capacity, 'auto' or N (`config.render.capacity`, `render.rasterize`).
    relight: re-shade R from X_i's light to the light of the frame the hint comes from
      (`config.render.relight`, `reshade_render`); the papers' R keeps X_i's shading.
  """
  identity = to_model_range(frames.identity)
  appearance = to_model_range(frames.appearance)
  size = identity.shape[1]
  target_screen = face3d.project_face(face_model, frames.id_coeffs, frames.exp_coeffs, frames.camera)
  identity_screen = face3d.project_face(face_model, frames.id_coeffs, frames.identity_exp, frames.identity_camera)
  face = render.render_face(target_screen, identity_screen, face_model.triangles, identity, size, size,
                            tolerance=tolerance, capacity=capacity)
  rendered_face = face.render
  if relight:
    rendered_face = reshade_render(face_model, frames, face, target_screen, identity_screen, capacity)
  hint_source = jnp.where(jnp.asarray(frames.hint_from_identity)[:, None, None, None], identity, appearance)
  return RenderedFrames(identity=identity, appearance=appearance, render=rendered_face, face_mask=face.face_mask,
                        hint=render.appearance_hint(hint_source, face.face_mask), screen=target_screen,
                        fragments=face.fragments)


def reshade_render(face_model: face3d.MorphableModel, frames: FrameInputs, face: render.FaceRender,
                   target_screen: jax.Array, identity_screen: jax.Array, capacity="auto") -> jax.Array:
  """R re-shaded from the light of X_i to the light of the frame the output is pasted into (X_i
  on intra rows, X_p on the others), both fitted as second-order spherical harmonics to the
  frames' face pixels, their normals from the frames' own meshes (`render.light`).

  A texel of R keeps X_i's colour divided by X_i's shading at its normal in X_i and multiplied by
  the target light's shading at its normal in the output (`render.shading_ratio`). On intra rows
  this moves the shading with the pose (X_i's frame 0 seen turned); on inter rows it also takes
  X_p's light. R's mean brightness over the face stays X_i's.

  Returns:
    R [N, S, S, 3] in [-1, 1], 0 where there is no texture.

  Raises:
    ValueError: `frames` without X_p's own coefficients (`FrameInputs.appearance_id`, `appearance_exp`).
  """
  if frames.appearance_id is None or frames.appearance_exp is None:
    raise ValueError("relighting R needs X_p's own identity and expression (FrameInputs.appearance_id and "
                     "appearance_exp): its own mesh tells which of its pixels show its face")
  triangles = face_model.triangles
  size = frames.appearance.shape[1]
  appearance_screen = face3d.project_face(face_model, frames.appearance_id, frames.appearance_exp, frames.camera)
  appearance_fragments = render.rasterize(appearance_screen, triangles, size, size, capacity=capacity)
  per_frame = lambda fn: jax.vmap(fn, in_axes=(0, 0, None))  # noqa: E731
  normals = {name: render.vertex_normals(screen, triangles)
             for name, screen in (("identity", identity_screen), ("target", target_screen),
                                  ("appearance", appearance_screen))}

  def light_of(fragments, vertex_normals, image):
    pixel = per_frame(render.pixel_normals)(fragments, vertex_normals, triangles)
    intensity = render.luminance(image.astype(jnp.float32) / 255.0)
    return jax.vmap(render.fit_sh_light)(pixel, intensity, fragments.mask)

  identity_light = light_of(face.identity_fragments, normals["identity"], frames.identity)
  appearance_light = light_of(appearance_fragments, normals["appearance"], frames.appearance)
  target_light = jnp.where(jnp.asarray(frames.hint_from_identity)[:, None], identity_light, appearance_light)
  source_normals = per_frame(render.pixel_normals)(face.fragments, normals["identity"], triangles)
  target_normals = per_frame(render.pixel_normals)(face.fragments, normals["target"], triangles)
  ratio = jax.vmap(render.shading_ratio)(identity_light, source_normals, target_light, target_normals,
                                         face.texture_valid)
  reshaded = jnp.clip((face.render * 0.5 + 0.5) * ratio[..., None], 0.0, 1.0) * 2.0 - 1.0
  return jnp.where(face.texture_valid[..., None], reshaded, face.render)


class Scene(NamedTuple):
  """The renderer's view of B samples. Frame arrays are [2B, ...] with the two times of a sample
  side by side: row 2n is sample n at t, row 2n + 1 at t-1 (`at_t`, `at_prev`), so that a batch
  split over devices keeps both times of each sample on the same device.

  Attributes:
    identity: X_i [2B, S, S, 3] in [-1, 1].
    appearance: X_p [2B, S, S, 3] in [-1, 1].
    expression: [2B, S, S, 3] in [-1, 1]: the frame whose expression the recombined face took (X_e;
      X_p itself on intra samples).
    render: R [2B, S, S, 3], the recombined face textured from X_i, 0 where there is no texture.
    face_mask: M^ [2B, S, S, 1].
    hint: M [2B, S, S, 3], X_i (intra) or X_p (inter) with the face cut out.
    flow: [B, S, S, 2], F(t -> t-1) of the recombined mesh, in pixels.
    flow_valid: [B, S, S] bool, visible at t and at t-1.
    intra: [B] bool, intra-video (self-reenactment) samples.
    overflow: [] int32, frames whose rasterization overflowed a fixed chunk capacity (never with 'auto').
  """

  identity: jax.Array
  appearance: jax.Array
  expression: jax.Array
  render: jax.Array
  face_mask: jax.Array
  hint: jax.Array
  flow: jax.Array
  flow_valid: jax.Array
  intra: jax.Array
  overflow: jax.Array


def at_t(frames: jax.Array) -> jax.Array:
  """The rows of frame t of a [2B, ...] scene array: [B, ...]."""
  return frames[0::2]


def at_prev(frames: jax.Array) -> jax.Array:
  """The rows of frame t-1 of a [2B, ...] scene array: [B, ...]."""
  return frames[1::2]


def step_batch(batch: dict) -> dict:
  """The part of a pipeline batch the jitted functions read (no int64 sample numbers)."""
  out = {f"{role}_{time}": {key: batch[f"{role}_{time}"][key] for key in STEP_FIELDS}
         for role in ROLES for time in TIMES}
  out["branch"] = batch["branch"]
  return out


def build_scene(face_model: face3d.MorphableModel, batch: dict, tolerance: float,
                expression_source: str = "appearance", capacity="auto", relight: bool = False) -> Scene:
  """Recombines, renders and computes the flow for a batch (on one device's samples).

  Args:
    face_model: the morphable model the records were fitted with.
    batch: `step_batch` arrays of B samples.
    tolerance: depth slack of the visibility tests, in pixels (`render.visible`).
    expression_source: whose expression inter-video samples take (`EXPRESSION_SOURCES`).
    capacity: the rasterizer's extra-chunk capacity, 'auto' or N (`render_frames`).
    relight: re-shade R to the light of the frame the hint comes from (`render_frames`).
  """
  if expression_source not in EXPRESSION_SOURCES:
    raise ValueError(f"unknown expression source {expression_source!r}; expected one of {list(EXPRESSION_SOURCES)}")

  def both_times(role: str, field: str) -> jax.Array:  # rows alternate t, t-1 (see `Scene`)
    pair = jnp.stack([batch[f"{role}_t"][field], batch[f"{role}_prev"][field]], axis=1)
    return pair.reshape(-1, *pair.shape[2:])

  intra = batch["branch"] == INTRA
  rows_intra = jnp.repeat(intra, 2)
  expression_image = both_times("appearance", "image")
  exp_coeffs = both_times("appearance", "exp_coeffs")
  if expression_source == "expression":
    pick = lambda own, third: jnp.where(rows_intra.reshape(-1, *[1] * (own.ndim - 1)), own, third)  # noqa: E731
    expression_image = pick(expression_image, both_times("expression", "image"))
    exp_coeffs = pick(exp_coeffs, both_times("expression", "exp_coeffs"))
  frames = FrameInputs(identity=both_times("identity", "image"), id_coeffs=both_times("identity", "id_coeffs"),
                       identity_exp=both_times("identity", "exp_coeffs"),
                       identity_camera=both_times("identity", "camera"),
                       appearance=both_times("appearance", "image"), exp_coeffs=exp_coeffs,
                       camera=both_times("appearance", "camera"), hint_from_identity=rows_intra,
                       appearance_id=both_times("appearance", "id_coeffs"),
                       appearance_exp=both_times("appearance", "exp_coeffs"))
  rendered = render_frames(face_model, frames, tolerance, capacity, relight)
  flow, valid = jax.vmap(render.dense_flow, in_axes=(0, 0, None, 0, 0, None))(
      at_t(rendered.screen), at_prev(rendered.screen), face_model.triangles,
      jax.tree.map(at_t, rendered.fragments), jax.tree.map(at_prev, rendered.fragments), tolerance)
  return Scene(identity=rendered.identity, appearance=rendered.appearance,
               expression=to_model_range(expression_image), render=rendered.render,
               face_mask=rendered.face_mask, hint=rendered.hint, flow=flow, flow_valid=valid, intra=intra,
               overflow=jnp.sum(rendered.fragments.overflow.astype(jnp.int32)))


# ---------------------------------------------------------------------------------------------
# The networks as functions of their parameters.
# ---------------------------------------------------------------------------------------------


class Networks(NamedTuple):
  """The static structure (NNX graph definitions) of E, G and D."""

  embedder: Any
  generator: Any
  discriminator: Any


def abstract_networks(model_config) -> Networks:
  models = nnx.eval_shape(lambda: build_models(model_config, nnx.Rngs(0)))
  return Networks(*(nnx.split(module)[0] for module in models))


def blend(networks: Networks, params: dict, variables: dict, appearance: jax.Array, hint: jax.Array,
          render_image: jax.Array, face_mask: jax.Array, train: bool):
  """The deep blending network: P = E(X_p, M), Y = G(R, P, M^) (images in [-1, 1]); with hint
  skips (`model.gen_skips` 'hint' or 'both'), Y = G(R, P, M^, M).

  Returns:
    Y [B, S, S, 3], P, and the updated generator variables (batch-norm statistics).
  """
  embedder = nnx.merge(networks.embedder, params["embedder"], variables["embedder"], copy=True)
  generator = nnx.merge(networks.generator, params["generator"], variables["generator"], copy=True)
  if not train:
    generator.eval()
  appearance_code = embedder(appearance, hint)
  output = generator(render_image, appearance_code, face_mask, hint)
  return output, appearance_code, nnx.split(generator, nnx.Param, ...)[2]


def blend_scene(networks: Networks, params: dict, variables: dict, scene, train: bool):
  """`blend` on a `Scene` or `RenderedFrames`."""
  return blend(networks, params, variables, scene.appearance, scene.hint, scene.render, scene.face_mask, train)


def embed(networks: Networks, params: dict, variables: dict, image: jax.Array, hint: jax.Array) -> jax.Array:
  """P = E(image, hint)."""
  return nnx.merge(networks.embedder, params["embedder"], variables["embedder"], copy=True)(image, hint)


def discriminate(networks: Networks, disc_params, disc_vars, image: jax.Array, condition: Optional[jax.Array]):
  """D(image, condition) per scale, and D's updated variables (spectral-norm vectors)."""
  discriminator = nnx.merge(networks.discriminator, disc_params, disc_vars, copy=True)
  outputs = discriminator(image, condition)
  return outputs, nnx.split(discriminator, nnx.Param, ...)[2]


# ---------------------------------------------------------------------------------------------
# Evaluation outputs.
# ---------------------------------------------------------------------------------------------

GRID_COLUMNS = ("identity", "appearance", "expression", "render", "face_mask", "hint", "output", "warped_prev")


def evaluation_outputs(networks: Networks, params: dict, variables: dict, scene: Scene) -> dict:
  """Y of a scene (G's running batch statistics) and what the evaluation reads of it.

  Returns a dict of [B] per-sample metrics ('ssim' against X_p at t, 'temporal_error' E_tmp
  between Y(t) and the warped Y(t-1) over the valid flow, 'flow_pixels') and [B, S, S, C] images
  in [0, 1] for the grid (`GRID_COLUMNS`).
  """
  output, _, _ = blend_scene(networks, params, variables, scene, train=False)
  unit = metrics.to_unit_range
  output_t, output_prev = unit(at_t(output)), unit(at_prev(output))
  warped = render.warp(output_prev, scene.flow)
  return {
      "ssim": metrics.ssim_per_sample(output_t, unit(at_t(scene.appearance))),
      "temporal_error": metrics.temporal_warping_error_per_sample(output_t, output_prev, scene.flow, scene.flow_valid),
      "flow_pixels": jnp.sum(scene.flow_valid, axis=(1, 2)),
      "identity": unit(at_t(scene.identity)),
      "appearance": unit(at_t(scene.appearance)),
      "expression": unit(at_t(scene.expression)),
      "render": unit(at_t(scene.render)),
      "face_mask": jnp.broadcast_to(at_t(scene.face_mask), output_t.shape),
      "hint": unit(at_t(scene.hint)),
      "output": output_t,
      "warped_prev": jnp.where(scene.flow_valid[..., None], warped, 0.0),
  }


def image_grid(outputs: dict, rows, columns=GRID_COLUMNS) -> np.ndarray:
  """[rows * S, len(columns) * S, 3] uint8 of [0, 1] images: per sample (the first `rows`, or the
  listed sample numbers) its `columns`, by default X_i, X_p, X_e, R, M^, M, Y, warped Y(t-1)."""
  if isinstance(rows, int):
    rows = range(min(rows, outputs["output"].shape[0]))
  tiles = [np.concatenate([np.asarray(outputs[name][row]) for name in columns], axis=1) for row in rows]
  return to_uint8(np.concatenate(tiles, axis=0))


def pad_batch(batch, multiple: int):
  """Repeats the last sample so the batch's size divides by `multiple`; returns it and the real size.

  Used where one compiled function serves every batch (a mesh, a fixed editing batch): G then runs
  with its running batch statistics, so the repeated samples change no real output.
  """
  size = len(jax.tree.leaves(batch)[0])
  extra = -size % multiple
  if not extra:
    return batch, size
  return jax.tree.map(lambda x: np.concatenate([np.asarray(x), np.repeat(np.asarray(x)[-1:], extra, axis=0)]),
                      batch), size


# ---------------------------------------------------------------------------------------------
# Loading a checkpoint for inference.
# ---------------------------------------------------------------------------------------------


class InferenceCheckpoint(NamedTuple):
  """What inference needs of a training run.

  Attributes:
    config: the run's config.
    step: the checkpoint's step.
    face_model: the morphable model the run was trained with.
    networks: E, G, D graph definitions.
    params: E and G parameters (the EMA copy when the run kept one).
    variables: the non-parameter variables of E and G (batch-norm statistics).
    directory: the checkpoints folder it was read from.
  """

  config: ml_collections.ConfigDict
  step: int
  face_model: face3d.MorphableModel
  networks: Networks
  params: dict
  variables: dict
  directory: str = ""

  @property
  def image_size(self) -> int:
    return int(self.config.model.image_size)


# The run record saved beside each checkpoint (`run_record`): what a checkpoint was trained with.
RUN_RECORD = "run"


def run_record(config, face_model: face3d.MorphableModel, networks_shapes: dict) -> dict:
  """The facts a checkpoint keeps about its run: the face model's name and content hash, the
  image size, what G's head means (`model.gen_output`: the same shapes read as an image or as a
  correction of the scene) and the shapes of every network parameter (`parameter_shapes`)."""
  return {"face_model": str(config.face_model), "face_model_name": face_model.name,
          "face_model_hash": face3d.content_hash(face_model), "image_size": int(config.model.image_size),
          "generator_output": str(config.model.get("gen_output", "image")), "parameter_shapes": networks_shapes}


def parameter_shapes(tree) -> dict:
  """{'/'-joined key path: [shape]} of a pytree of arrays (or shape structs)."""
  return {jax.tree_util.keystr(path, simple=True, separator="/"): list(np.shape(leaf))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


# The variables key of G's batch-norm statistics averaged like the EMA parameters
# (`optim.ema_batch_stats='average'`).
EMA_STATISTICS = "generator_ema"
EMA_BATCH_STATS = ("train", "average")


def inference_state(model_config, with_ema: bool, with_ema_statistics: bool = False):
  """The abstract {'params', 'variables', 'ema'} of E and G that inference restores."""
  models = nnx.eval_shape(lambda: build_models(model_config, nnx.Rngs(0)))
  _, e_params, e_vars = nnx.split(models.embedder, nnx.Param, ...)
  _, g_params, g_vars = nnx.split(models.generator, nnx.Param, ...)
  params = {"embedder": e_params, "generator": g_params}
  variables = {"embedder": e_vars, "generator": g_vars}
  if with_ema_statistics:
    variables[EMA_STATISTICS] = g_vars
  return {"params": params, "variables": variables, "ema": params if with_ema else {}}


def evaluation_variables(variables: dict) -> dict:
  """The variables to run the EMA parameters with: G's averaged batch statistics where the run kept
  them (`EMA_STATISTICS`), else its trained ones."""
  if EMA_STATISTICS not in variables:
    return variables
  return {**{k: v for k, v in variables.items() if k != EMA_STATISTICS}, "generator": variables[EMA_STATISTICS]}


def checkpoint_json(step_dir, item: str, required: bool = False) -> Optional[dict]:
  """A JSON item of a checkpoint step (orbax's `JsonCheckpointHandler` layout: ITEM/metadata), such
  as its config or its run record; None where the item is absent (checkpoints older than it) and
  not `required`.

  Raises:
    OSError, ValueError: the item is unreadable (or absent and required).
  """
  path = os.path.join(os.fspath(step_dir), item, "metadata")
  if not required and not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def checkpoint_steps(directory) -> list[int]:
  """The finished checkpoint steps in an orbax checkpoints folder, oldest first (orbax's own
  temporary folders, of a save that never finished, are not steps)."""
  steps = []
  for name in os.listdir(directory):
    if name.isdigit() and os.path.isdir(os.path.join(directory, name)):
      steps.append(int(name))
  return sorted(steps)


def find_checkpoint(path, step: Optional[int] = None) -> tuple[str, int]:
  """(checkpoints folder, step) of a training run's checkpoint.

  Args:
    path: a run's --workdir, its checkpoints/ folder, or one step's folder (checkpoints/STEP).
    step: a checkpoint step; default the step folder given, else the latest.

  Raises:
    CheckpointError: no checkpoint there, or no such step.
  """
  path = os.path.expanduser(os.fspath(path))
  name = os.path.basename(os.path.normpath(path))
  if name.isdigit() and os.path.isdir(os.path.join(path, "state")):  # a step's folder
    directory, step = os.path.dirname(os.path.normpath(path)), int(name) if step is None else step
  elif os.path.isdir(os.path.join(path, "checkpoints")):
    directory = os.path.join(path, "checkpoints")
  elif os.path.isdir(path) and checkpoint_steps(path):
    directory = path
  elif not os.path.exists(path):
    raise CheckpointError(f"{path}: no such folder; give the --workdir of a training run")
  else:
    raise CheckpointError(f"{path}: no checkpoints/ folder; give the --workdir of a training run")
  steps = checkpoint_steps(directory)
  if not steps:
    raise CheckpointError(f"{directory}: holds no checkpoint yet")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise CheckpointError(f"{directory}: no checkpoint of step {step} (it has {steps})")
  return directory, int(step)


def checkpoint_config(path, step: Optional[int] = None) -> tuple[dict, int]:
  """(config as JSON, step) of a run's checkpoint, `path` and `step` as `find_checkpoint` takes them.

  Raises:
    CheckpointError: no checkpoint there. OSError, ValueError: an unreadable config.
  """
  directory, step = find_checkpoint(path, step)
  return checkpoint_json(os.path.join(directory, str(step)), "config", required=True), step


def saved_state_tree(checkpointer, step_dir) -> dict:
  """The metadata tree (fields, shapes, dtypes) of a checkpoint step's train state.

  Raises:
    CheckpointError: the metadata is unreadable.
  """
  try:
    saved = checkpointer.metadata(os.path.join(os.fspath(step_dir), "state"))
    return saved.item_metadata.tree if hasattr(saved, "item_metadata") else getattr(saved, "tree", saved)
  except Exception as error:  # noqa: BLE001 - any unreadable metadata is one error for the user
    raise CheckpointError(f"{step_dir}/state: unreadable checkpoint ({error})") from error


def load_checkpoint(workdir, face_model: Optional[str] = None, step: Optional[int] = None) -> InferenceCheckpoint:
  """Reads G, E, the EMA and their variables, the config and the face model of a training run.

  Only what inference needs is restored (not D, the optimizer states or the data iterator).

  Args:
    workdir: the `--workdir` of `tfvgan_jax.main` (or its checkpoints/ folder, or one step's folder).
    face_model: the morphable model file, when the run's `config.face_model` path does not exist on
      this machine; it must be the same model (content hash recorded in the checkpoint, or of the
      run's file where the checkpoint predates that record) when both can be compared.
    step: a checkpoint step; default the latest.

  Raises:
    CheckpointError: no checkpoint there, or a face model that is not the run's.
  """
  import orbax.checkpoint as ocp  # imported here: importing the module stays light

  directory, step = find_checkpoint(workdir, step)
  step_dir = os.path.join(directory, str(step))
  try:
    config = ml_collections.ConfigDict(checkpoint_json(step_dir, "config", required=True))
    record = checkpoint_json(step_dir, RUN_RECORD)
  except (OSError, ValueError) as error:
    raise CheckpointError(f"{step_dir}: the checkpoint's config is unreadable ({error})") from error
  model = checkpoint_face_model(config, record, face_model, directory)
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  saved = saved_state_tree(checkpointer, step_dir)
  with_ema = bool(jax.tree.leaves(saved.get("ema", {})))
  with_ema_statistics = with_ema and config.optim.get("ema_batch_stats", "train") == "average"
  abstract = inference_state(config.model, with_ema, with_ema_statistics)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), abstract)
  try:
    state = checkpointer.restore(os.path.join(step_dir, "state"), args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
  except Exception as error:  # noqa: BLE001
    raise CheckpointError(f"{step_dir}/state: cannot restore the networks ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''})") from error
  finally:
    checkpointer.close()
  params = state["ema"] if with_ema else state["params"]
  return InferenceCheckpoint(config, int(step), model, abstract_networks(config.model), params,
                             evaluation_variables(state["variables"]), directory)


def checkpoint_face_model(config, record: Optional[dict], override: Optional[str], directory) -> face3d.MorphableModel:
  """The run's face model: its file (`config.face_model`), or `override` checked against the hash
  the checkpoint recorded (or against the run's file, for checkpoints without that record)."""
  trained_with = str(config.face_model)
  recorded = record.get("face_model_hash") if record else None
  try:
    trained = face3d.load_model(trained_with)
  except (OSError, ValueError):
    trained = None
  if override is None:
    if trained is None:
      raise CheckpointError(f"{directory}: the run was trained with face model {trained_with!r}, which is not "
                            f"readable here; pass that model with --face_model")
    if recorded and face3d.content_hash(trained) != recorded:
      raise CheckpointError(f"{trained_with}: this file is not the face model the checkpoint was trained with "
                            f"(its content changed since); pass the run's model with --face_model")
    return trained
  model = face3d.load_model(override)
  expected = recorded or (face3d.content_hash(trained) if trained is not None else None)
  if expected is None:
    logging.warning("%s: the checkpoint in %s records no face-model hash and its model %r is not readable here: "
                    "the given model cannot be checked", override, directory, trained_with)
  elif face3d.content_hash(model) != expected:
    raise CheckpointError(f"{override}: not the face model the checkpoint was trained with ({trained_with!r}"
                          f"{', ' + record['face_model_name'] if record and record.get('face_model_name') else ''}); "
                          f"edits need the same model")
  return model
