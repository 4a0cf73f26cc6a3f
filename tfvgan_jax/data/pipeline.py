"""The training input pipeline: grain over frame datasets, with Dynamic Training Sample Selection.

`training_dataset(config.data, model)` returns a grain `IterDataset` of batches. Its iterator's
`get_state()` / `set_state()` are saved and restored with checkpoints: sample n of the run is a pure
function of (data.seed, n), so a resumed run sees exactly the batches it would have seen, whatever
the number of worker processes.

config.data fields:
  videos        path of the video frame dataset (`records.write_dataset`)
  images        path of the image-set dataset ('video_image' sampling), or '' / None
  sampling      'intra_inter' (UniFaceGAN) or 'video_image' (TFVGAN); see `sampling.SAMPLERS`
  sigma         the sampling's ratio (intra-video ratio, or image-set ratio)
  frame_gap     k of the (t, t-k) pairs; 1 in the papers
  people        how videos' people are told apart, 'video' or 'folder' (`sampling.PEOPLE`):
                inter-video samples take three people; with fewer than three, self-reenactment only
  held_out_tail fraction of each video's frames, at its end, never drawn (evaluation frames of the
                same clips: `evaluation.self_reenactment_batch(..., tail=)`); 0 draws them all
  batch_size    global batch size; each process reads batch_size / process_count samples
  seed          seed of the sample sequence
  num_workers   grain worker processes (0: decode in the main process)
  num_threads   decoding threads per process
  prefetch      batches read ahead

A sample is a dict (a batch stacks every leaf along a leading axis):

  identity_t, identity_prev, appearance_t, appearance_prev, expression_t, expression_prev
      one frame each (role X_i, X_p, X_e at time t and t-k), a dict of
        image       [S, S, 3] uint8
        id_coeffs   [K_id] float32      exp_coeffs  [K_exp] float32
        camera      [6] float32         landmarks   [68, 2] float32
        source      int32: 0 the video dataset, 1 the image set
        video       int32: the video's number in its source's `FrameIndex` (ids in `video_ids`)
        frame_index int32: the frame's number in its video
  branch   int32: sampling.INTRA (0, one video: self-reenactment) or sampling.INTER (1, three
           sources: swapping)
  index    int64: the sample's number in the run
"""

from __future__ import annotations

import logging
from typing import Optional

import grain
import jax
import numpy as np

from tfvgan_jax import face3d
from tfvgan_jax.data import records, sampling

FRAME_FIELDS = ("image", "id_coeffs", "exp_coeffs", "camera", "landmarks")
# Samples are numbered up to this bound: a run reads far fewer.
_MAX_SAMPLES = 1 << 48


class SampleReader:
  """Draws sample n (`sampling`) and reads its six frames: a picklable grain map function.

  The frame datasets are opened lazily in each process that uses the reader; the per-video
  indices are built (or read from their cache) once, in the process that creates it.
  """

  def __init__(self, data_config, model: Optional[face3d.MorphableModel] = None):
    self.sampling = data_config.sampling
    self.sigma = float(data_config.sigma)
    self.frame_gap = int(data_config.frame_gap)
    self.seed = int(data_config.seed)
    self.sources = [records.open_dataset(data_config.videos)]
    images = data_config.images
    if images:
      self.sources.append(records.open_dataset(images))
    if model is not None:
      for source in self.sources:
        records.check_model(source, model)
    sizes = {source.image_size for source in self.sources}
    if len(sizes) > 1:
      raise ValueError(f"{data_config.videos} and {images} hold crops of different sizes {sorted(sizes)}")
    self.held_out_tail = sampling.check_held_out_tail(data_config.get("held_out_tail", 0.0))
    people = data_config.get("people", "video")
    self.indices = [sampling.FrameIndex(*records.load_video_index(source)) for source in self.sources]
    self.indices[0] = self.indices[0].head(self.held_out_tail).with_people(people)
    name = str(self.sources[0].path)
    if self.held_out_tail:
      name += f" (the first {1 - self.held_out_tail:.0%} of each video: data.held_out_tail={self.held_out_tail})"
    sampling.check_sampling(self.sampling, self.indices[0], self.indices[1] if images else None, self.frame_gap,
                            name=name)
    count = sampling.people_count(self.indices[0], self.frame_gap)
    if self.sampling == "intra_inter" and self.sigma < 1 and count < len(sampling.ROLES):
      kind = "videos" if people == "video" else "people (data.people='folder')"
      logging.warning("%s: %d %s with more than %d frames, and inter-video (swap) samples need three: swaps cannot "
                      "be trained, so the run trains self-reenactment only (data.sigma %s -> 1). Add clips of other "
                      "people to train swaps.", name, count, kind, self.frame_gap, self.sigma)
      self.sigma = 1.0
    self.sampler = sampling.SAMPLERS[self.sampling]

  @property
  def image_size(self) -> int:
    return self.sources[0].image_size

  def spec(self, index: int) -> sampling.SampleSpec:
    images = self.indices[1] if len(self.indices) > 1 else None
    return self.sampler(sampling.sample_rng(self.seed, index), self.indices[0], images, self.sigma, self.frame_gap)

  def _frame(self, slot: sampling.Slot) -> dict:
    frame_index = self.indices[slot.source]
    record = self.sources[slot.source][frame_index.record(slot.video, slot.position)]
    out = {key: record[key] for key in FRAME_FIELDS}
    out.update(source=np.int32(slot.source), video=np.int32(slot.video), frame_index=np.int32(record["frame_index"]))
    return out

  def __call__(self, index) -> dict:
    index = int(index)
    spec = self.spec(index)
    sample = {f"{role}_{time}": self._frame(spec.slots[role][time]) for role in sampling.ROLES for time in sampling.TIMES}
    sample["branch"] = np.int32(spec.branch)
    sample["index"] = np.int64(index)
    return sample


class GlobalNumber:
  """Position in this process's sample stream -> the sample's number in the run (picklable)."""

  def __init__(self, per_process: int, process_index: int, process_count: int):
    self.per_process, self.process_index, self.process_count = per_process, process_index, process_count

  def __call__(self, position) -> int:
    batch, within = divmod(int(position), self.per_process)
    return (batch * self.process_count + self.process_index) * self.per_process + within


def process_slice(batch_size: int, process_index: int, process_count: int) -> int:
  """Samples per process of a global batch; the global batch must divide evenly."""
  if batch_size % process_count:
    raise ValueError(f"data.batch_size={batch_size} is not divisible by the {process_count} processes")
  return batch_size // process_count


def training_dataset(data_config, model: Optional[face3d.MorphableModel] = None, *,
                     process_index: Optional[int] = None, process_count: Optional[int] = None) -> grain.IterDataset:
  """The grain dataset of this process's share of each global training batch.

  Global batch b holds samples b * B ... (b + 1) * B - 1; process p reads the p-th of its
  process_count equal slices. The data order is therefore the same for any number of processes.

  Args:
    data_config: `config.data` (see the module docstring).
    model: when given, datasets fitted with another morphable model are refused.
    process_index, process_count: default `jax.process_index()` / `jax.process_count()`.

  Returns:
    An IterDataset of batches (dicts of [B / process_count, ...] arrays).
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  per_process = process_slice(int(data_config.batch_size), process_index, process_count)
  reader = SampleReader(data_config, model)
  dataset = grain.MapDataset.range(_MAX_SAMPLES).map(GlobalNumber(per_process, process_index, process_count))
  dataset = dataset.map(reader)
  dataset = dataset.batch(per_process, drop_remainder=True)
  options = grain.ReadOptions(num_threads=int(data_config.num_threads),
                              prefetch_buffer_size=int(data_config.prefetch))
  iterable = dataset.to_iter_dataset(options)
  num_workers = int(data_config.num_workers)
  if num_workers > 0:
    iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iterable
