"""Ground truth for every editing task, on held-out synthetic videos.

The synthetic renderer (`data.synthetic`) knows each video's identity, skin, expression, cameras,
light and background. For an identity video A, an expression video E and an appearance video P it
therefore renders the frame an edit should produce (`render_recombined`): A's shape (identity
coefficients) and skin (albedo tint), E's expression, and P's pose (camera), light and background.

The four tasks are run as editing runs them (`tfvgan_jax.edit`): X_i is frame 0 of A (the identity
frame's texture), X_e and X_p are frames t = 1 .. T of E and P, each sample at t and t - 1:

  task               A (X_i)     E (X_e)     P (X_p)   hint M          sample branch
  self_reenactment   video v     video v     video v   X_i (1 - M^)    intra
  cross_reenactment  video v+1   video v     video v   X_i (1 - M^)    intra  (edit's reenact)
  swap               video v+1   video v     video v   X_p (1 - M^)    inter  (edit's swap)
  disentangled       video v+1   video v+2   video v   X_p (1 - M^)    inter  (edit's disentangle)

(video numbers wrap). On intra samples the scene takes X_p's expression (X_e = X_p) and the hint
from X_i; on inter samples it takes X_e's expression when the scene builder is asked for it
(`inference.build_scene(..., expression_source='expression')`) and the hint from X_p. The truth's
background and light are those of the video the hint comes from, which is the one editing pastes
the output into: P for swaps and disentangled manipulation (the target video), A for reenactment
(`edit` pastes it into the source's frame, the hint shows the source's background); in
self-reenactment A is P.

Besides the truth, each sample has the two references of the margins (`TaskSamples`): the frame
with the target's identity (P's identity and skin, everything else as the truth) and the truth
rendered with P's expression instead of E's; each is None where it equals the truth (the target's
identity is A's in self-reenactment; E is P except in disentangled manipulation).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from tfvgan_jax import face3d
from tfvgan_jax.data import sampling, synthetic

# Step fields of a frame (`inference.STEP_FIELDS`), as the scene builder reads them.
_FIELDS = ("image", "id_coeffs", "exp_coeffs", "camera")


class Task(NamedTuple):
  """Which held-out videos fill a task's roles, as offsets from the appearance video v."""

  name: str
  identity_offset: int
  expression_offset: int
  branch: int


TASKS = (
    Task("self_reenactment", 0, 0, sampling.INTRA),
    Task("cross_reenactment", 1, 0, sampling.INTRA),
    Task("swap", 1, 0, sampling.INTER),
    Task("disentangled", 1, 2, sampling.INTER),
)
TASK_NAMES = tuple(task.name for task in TASKS)


def scene_offset(task: Task) -> int:
  """The offset of the video whose background and light the task's truth has: the hint's video,
  A (X_i) on intra samples, P on inter samples (module docstring)."""
  return task.identity_offset if task.branch == sampling.INTRA else 0


# Distinct videos the tasks need: disentangled manipulation takes A, E and P from three videos.
MIN_VIDEOS = 3


class HeldOutVideo(NamedTuple):
  """A held-out synthetic video: its ground truth and its frames [T + 1, S, S, 3] uint8."""

  truth: synthetic.SyntheticVideo
  frames: np.ndarray


class TaskSamples(NamedTuple):
  """N = V x T samples of one task, video-major (sample v * T + t - 1 is frame t of P = video v).

  Attributes:
    batch: the samples in the layout of a training step (`inference.step_batch`).
    truth: [N, S, S, 3] uint8, the frame the edit should produce.
    truth_coverage: [N, S, S] float32 in [0, 1], the truth's face mask.
    identity_reference: [N, S, S, 3] uint8, the frame with the target's (P's) identity, or None
      where A is P.
    identity_coverage: its face mask, or None.
    expression_reference: [N, S, S, 3] uint8, the truth with P's expression, or None where E is P.
    expression_coverage: its face mask, or None.
  """

  batch: dict
  truth: np.ndarray
  truth_coverage: np.ndarray
  identity_reference: Optional[np.ndarray]
  identity_coverage: Optional[np.ndarray]
  expression_reference: Optional[np.ndarray]
  expression_coverage: Optional[np.ndarray]


def held_out_videos(model: face3d.MorphableModel, seed: int, num_videos: int, num_frames: int,
                    size: int) -> list[HeldOutVideo]:
  """Videos 0 .. V-1 of a synthetic corpus with `seed` (`synthetic.video_seed`), T + 1 frames each."""
  videos = []
  for v in range(num_videos):
    truth = synthetic.sample_video(model, synthetic.video_seed(seed, v), num_frames + 1, size)
    frames = synthetic.render_frames(model, truth.appearance, truth.id_coeffs, truth.exp_coeffs, truth.cameras, size)
    videos.append(HeldOutVideo(truth, frames))
  return videos


def render_recombined(model: face3d.MorphableModel, identity: synthetic.SyntheticVideo,
                      expression: synthetic.SyntheticVideo, appearance: synthetic.SyntheticVideo, frames,
                      size: int, scene: Optional[synthetic.SyntheticVideo] = None) -> tuple[np.ndarray, np.ndarray]:
  """The true recombined frames: A's identity and skin, E's expression, P's pose, and the light and
  background of `scene` (P's by default).

  Args:
    model: the morphable model of the videos (with albedo).
    identity, expression, appearance: the ground truth of A, E and P.
    frames: [T] frame indices into E's expressions and P's cameras.
    size: S.
    scene: the video whose light and background the frames have (`scene_offset`), None for P.

  Returns:
    frames [T, S, S, 3] uint8 and their face coverage [T, S, S] float32
    (`synthetic.render_frames_with_coverage`).
  """
  frames = np.asarray(frames)
  look = (appearance if scene is None else scene).appearance._replace(tint=identity.appearance.tint)
  return synthetic.render_frames_with_coverage(model, look, identity.id_coeffs, expression.exp_coeffs[frames],
                                               appearance.cameras[frames], size)


def _frame(video: HeldOutVideo, t: int) -> dict:
  truth = video.truth
  return {"image": video.frames[t], "id_coeffs": truth.id_coeffs, "exp_coeffs": truth.exp_coeffs[t],
          "camera": truth.cameras[t]}


def task_samples(model: face3d.MorphableModel, videos: list[HeldOutVideo], task: Task, num_frames: int,
                 size: int) -> TaskSamples:
  """The samples of `task` over held-out videos, with their truths and references (module docstring).

  Raises:
    ValueError: fewer than `MIN_VIDEOS` videos, or videos shorter than num_frames + 1 frames.
  """
  if len(videos) < MIN_VIDEOS:
    raise ValueError(f"the tasks need at least {MIN_VIDEOS} held-out videos (disentangled manipulation takes "
                     f"identity, expression and appearance from three), got {len(videos)}")
  if num_frames < 1 or any(len(video.frames) < num_frames + 1 for video in videos):
    raise ValueError(f"every held-out video needs num_frames + 1 = {num_frames + 1} frames")
  count = len(videos)
  samples, truths, identity_refs, expression_refs = [], [], [], []
  times = np.arange(1, num_frames + 1)
  for v in range(count):
    a, e, p = (videos[(v + offset) % count] for offset in (task.identity_offset, task.expression_offset, 0))
    scene = videos[(v + scene_offset(task)) % count].truth
    identity = _frame(a, 0)
    for t in times:
      samples.append({"identity_t": identity, "identity_prev": identity,
                      "appearance_t": _frame(p, t), "appearance_prev": _frame(p, t - 1),
                      "expression_t": _frame(e, t), "expression_prev": _frame(e, t - 1)})
    truths.append(render_recombined(model, a.truth, e.truth, p.truth, times, size, scene))
    if task.identity_offset % count:
      identity_refs.append(render_recombined(model, p.truth, e.truth, p.truth, times, size, scene))
    if task.expression_offset % count:
      expression_refs.append(render_recombined(model, a.truth, p.truth, p.truth, times, size, scene))
  batch = {role: {key: np.stack([np.asarray(sample[role][key]) for sample in samples]) for key in _FIELDS}
           for role in samples[0]}
  batch["branch"] = np.full(len(samples), task.branch, np.int32)

  def joined(rendered, which):
    return np.concatenate([pair[which] for pair in rendered]) if rendered else None

  return TaskSamples(batch, joined(truths, 0), joined(truths, 1), joined(identity_refs, 0), joined(identity_refs, 1),
                     joined(expression_refs, 0), joined(expression_refs, 1))
