"""Held-out self-reenactment batches: the evaluation input of the training run.

For each of the first `num_videos` videos of a frame dataset, its first frame is the identity X_i
and frames 1 .. `num_frames` are, in turn, the appearance X_p = X_e at t (with frame t - 1 as the
previous one). The generator should reproduce X_p (self-reenactment has ground truth), and its
outputs at t and t - 1 should agree along the mesh's flow: the SSIM and the temporal warping
error of the run's evaluation.

The batch has the layout of a training batch (`pipeline` module docstring), with `branch` INTRA
everywhere, so the jitted functions of training apply to it unchanged.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from tfvgan_jax import face3d, files
from tfvgan_jax.data import records, sampling
from tfvgan_jax.data.pipeline import FRAME_FIELDS


def _frame(dataset: records.FrameDataset, record: int, video: int) -> dict:
  example = dataset[int(record)]
  out = {key: example[key] for key in FRAME_FIELDS}
  out.update(source=np.int32(0), video=np.int32(video), frame_index=np.int32(example["frame_index"]))
  return out


def _stack(frames: list[dict]) -> dict:
  return {key: np.stack([frame[key] for frame in frames]) for key in frames[0]}


def self_reenactment_batch(path, num_videos: int, num_frames: int,
                           model: Optional[face3d.MorphableModel] = None, tail: float = 0.0) -> dict:
  """Samples (identity = frame 0, appearance = expression = frame t, t = 1 .. num_frames) of held-out videos.

  Args:
    path: a frame dataset (`records.write_dataset`), disjoint from the training videos, or the
      training videos themselves with `tail`.
    num_videos: videos used, the first ones in video-id order; 0 (or less): every video long enough.
    num_frames: frames t per video; each video needs num_frames + 1 frames.
    model: when given, a dataset fitted with another morphable model is refused.
    tail: > 0: only the held-out tail of each video (`sampling.split_held_out_tail`, the frames a
      run with `data.held_out_tail=tail` never trains on); its first frame is the identity.

  Returns:
    A batch dict of [num_videos * num_frames, ...] arrays, video-major.

  Raises:
    records.DatasetError: the dataset has fewer such videos than asked.
  """
  return reenactment_batch(*evaluation_videos(path, num_videos, num_frames, model, tail), num_frames)


def reenactment_batch(dataset: records.FrameDataset, videos: list, num_frames: int) -> dict:
  """`self_reenactment_batch` of the videos `evaluation_videos` chose."""
  samples = []
  for number, (_, order) in enumerate(videos):
    identity = _frame(dataset, order[0], number)
    frames = [_frame(dataset, record, number) for record in order[:num_frames + 1]]
    for t in range(1, num_frames + 1):
      sample = {"identity_t": identity, "identity_prev": identity,
                "appearance_t": frames[t], "appearance_prev": frames[t - 1],
                "expression_t": frames[t], "expression_prev": frames[t - 1]}
      samples.append(sample)
  batch = {role: _stack([sample[role] for sample in samples]) for role in samples[0]}
  batch["branch"] = np.full(len(samples), sampling.INTRA, np.int32)
  batch["index"] = np.arange(len(samples), dtype=np.int64)
  return batch


def evaluation_videos(path, num_videos: int, num_frames: int, model: Optional[face3d.MorphableModel] = None,
                      tail: float = 0.0) -> tuple[records.FrameDataset, list]:
  """(dataset, [(video id, records in frame order)]) of the videos `self_reenactment_batch` takes
  (same arguments, same errors), in its order."""
  dataset = records.open_dataset(path)
  if model is not None:
    records.check_model(dataset, model)
  index = records.video_index(dataset)
  if tail:
    _, index = sampling.split_held_out_tail(index, sampling.check_held_out_tail(tail, "tail"))
  videos = [(name, order) for name, order in sorted(index.items()) if len(order) > num_frames]
  if num_videos <= 0:
    num_videos = max(len(videos), 1)
  if len(videos) < num_videos:
    where = f"held-out tails ({tail:.0%} of each video)" if tail else "videos"
    raise records.DatasetError(f"{dataset.path}: evaluation needs {num_videos} {where} of at least "
                               f"{num_frames + 1} frames, the dataset has {len(videos)}")
  return dataset, videos[:num_videos]


def is_training_dataset(eval_path, train_videos) -> bool:
  """Whether `eval_path` is the training dataset `train_videos`, once both are resolved to their
  dataset folder (False where either is empty or the training dataset is not on this machine)."""
  if not eval_path or not train_videos:
    return False
  try:
    return files.same_file(records.open_dataset(eval_path).path, records.open_dataset(train_videos).path)
  except (OSError, ValueError):
    return False


def evaluation_tail(eval_path, train_videos, held_out_tail) -> float:
  """The held-out tail an evaluation of `eval_path` takes: `held_out_tail` when it is the training
  dataset `train_videos` (`is_training_dataset`: only the tails were never trained on), else 0
  (other videos, whole)."""
  return sampling.check_held_out_tail(held_out_tail or 0.0) if is_training_dataset(eval_path, train_videos) else 0.0
