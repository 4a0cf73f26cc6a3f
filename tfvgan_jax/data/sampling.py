"""Dynamic Training Sample Selection (DTSS): which frames make one training sample.

A sample has three roles, each at two times t and t-k (k = 1 in the papers; larger k is their
long-term variant): identity X_i, appearance (pose and background) X_p and expression X_e. A
sampler draws, from a per-sample random generator, the frames of all six slots and a branch:

  INTRA  one video supplies all three roles (UniFaceGAN eq. 1; TFVGAN's video clips). Ground truth
         exists (self-reenactment): L_rec and L_tmp apply.
  INTER  three different sources supply the roles (UniFaceGAN eq. 2: three videos; TFVGAN: three
         images of an image set, where t and t-k are the same image). No ground truth (swapping).
         Where videos share a person (`PEOPLE`, `FrameIndex.people`), the three are of three people.

Samplers are chosen by name (`config.data.sampling`), each one function in `SAMPLERS`:

  'intra_inter'  UniFaceGAN: INTRA with probability sigma, else three distinct videos.
  'video_image'  TFVGAN: INTER from the image set with probability sigma, else an INTRA video clip.

Frames are addressed as (source, video, position): `source` 0 is the video dataset and 1 the image
set, `video` an index into that source's `FrameIndex`, `position` the frame's place in the video.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np

INTRA, INTER = 0, 1
ROLES = ("identity", "appearance", "expression")
TIMES = ("t", "prev")
VIDEO_SOURCE, IMAGE_SOURCE = 0, 1


# How the videos' people are told apart (`config.data.people`): 'video', each video a person of its
# own (the papers' "three different videos"); 'folder', the first folder of the video's id (its path
# below the inputs' common folder in `data_prep.build`: clips/alice/a.mp4 and clips/alice/b.mp4 are
# one person), so that inter-video samples never pair a person with themself.
PEOPLE = ("video", "folder")


def person_of(video_id: str, rule: str) -> str:
  """The person of a video under a `PEOPLE` rule."""
  if rule not in PEOPLE:
    raise ValueError(f"config.data.people={rule!r}: choose one of {', '.join(PEOPLE)}")
  video_id = str(video_id)
  return video_id.split("/", 1)[0] if rule == "folder" and "/" in video_id else video_id


class FrameIndex(NamedTuple):
  """Frames of a dataset grouped by video, in frame order.

  Attributes:
    video_ids: [V] the videos' names.
    starts: [V] int64 offsets of each video's frames in `records`.
    lengths: [V] int64 frame counts.
    records: [sum(lengths)] int64 record indices, video by video, in frame order; or None where
      each video's frames are consecutive records, from record `starts[v]` on (a dataset written
      video by video: `records.load_video_index`), so that no per-frame array is held.
    people: [V] int64 number of each video's person, or None: every video a person of its own.
  """

  video_ids: tuple
  starts: np.ndarray
  lengths: np.ndarray
  records: Optional[np.ndarray]
  people: Optional[np.ndarray] = None

  @classmethod
  def from_videos(cls, videos: dict, people: str = "video") -> "FrameIndex":
    """From {video_id: record indices in frame order}, videos sorted by id for determinism, their
    people told apart by the `PEOPLE` rule `people`."""
    ids = tuple(sorted(videos))
    lengths = np.array([len(videos[v]) for v in ids], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    records = np.concatenate([np.asarray(videos[v], np.int64) for v in ids]) if ids else np.zeros(0, np.int64)
    return cls(ids, starts, lengths, records).with_people(people)

  def with_people(self, rule: str) -> "FrameIndex":
    """The index with its videos' people told apart by the `PEOPLE` rule `rule` (`people` stays
    None where every video is a person of its own, so the papers' draw is unchanged)."""
    names = [person_of(v, rule) for v in self.video_ids]
    numbers = None
    if len(set(names)) < len(names):  # some videos share a person
      numbers = np.unique(np.array(names, dtype=object), return_inverse=True)[1].astype(np.int64)
    return self._replace(people=numbers)

  def head(self, fraction: float) -> "FrameIndex":
    """The index without the last `tail_length(L, fraction)` frames of every video (the held-out
    tails of `split_held_out_tail`); the per-frame records, if any, are shared, not copied."""
    if not fraction:
      return self
    lengths = np.asarray(self.lengths, np.int64)
    return self._replace(lengths=lengths - tail_length(lengths, fraction))

  def record(self, video: int, position: int) -> int:
    if self.records is None:
      return int(self.starts[video] + position)
    return int(self.records[self.starts[video] + position])


class Slot(NamedTuple):
  """One frame of a sample: which source, video and position in the video."""

  source: int
  video: int
  position: int


class SampleSpec(NamedTuple):
  """The frames of one sample: slots[role][time] and the branch (INTRA or INTER)."""

  slots: dict
  branch: int


class DatasetTooSmall(ValueError):
  """The dataset cannot supply the chosen sampling (too few videos, or videos too short)."""


def _pick_frame(rng: np.random.Generator, length: int, k: int) -> int:
  """A position t with t - k still inside the video (UniFaceGAN eq. 1: l in [2, L_n] for k = 1)."""
  return int(rng.integers(k, length))


def _clip_slots(rng, source, video, length, k):
  t = _pick_frame(rng, length, k)
  return {"t": Slot(source, video, t), "prev": Slot(source, video, t - k)}


def _eligible(index: FrameIndex, k: int) -> np.ndarray:
  return np.nonzero(index.lengths > k)[0]


def people_count(videos: FrameIndex, k: int) -> int:
  """The number of distinct people among the videos with more than k frames."""
  eligible = _eligible(videos, k)
  return len(eligible) if videos.people is None else len(np.unique(videos.people[eligible]))


def check_sampling(sampling: str, videos: FrameIndex, images: Optional[FrameIndex], k: int, name: str = "dataset") -> None:
  """Raises DatasetTooSmall, naming the dataset, unless the sampler can draw from these sources.

  ('intra_inter' with fewer than three people can still draw its INTRA samples: the input pipeline
  then trains self-reenactment only, with a warning; see `people_count`.)"""
  if sampling not in SAMPLERS:
    raise ValueError(f"unknown data.sampling {sampling!r}; choose one of {sorted(SAMPLERS)}")
  long_enough = len(_eligible(videos, k))
  if long_enough < 1:
    raise DatasetTooSmall(f"{name}: no video has more than k={k} frames, so no (t, t-{k}) pair can be drawn")
  if sampling == "video_image":
    if images is None or len(images.lengths) < len(ROLES):
      have = 0 if images is None else len(images.lengths)
      raise DatasetTooSmall(f"{name}: 'video_image' sampling draws three different images from the image set; it has {have}")


def sample_intra_inter(rng: np.random.Generator, videos: FrameIndex, images: Optional[FrameIndex], sigma: float, k: int) -> SampleSpec:
  """UniFaceGAN eq. 1-2: one video with probability sigma (INTRA), else three distinct videos."""
  eligible = _eligible(videos, k)
  if rng.random() < sigma:
    video = int(rng.choice(eligible))
    length = int(videos.lengths[video])
    return SampleSpec({role: _clip_slots(rng, VIDEO_SOURCE, video, length, k) for role in ROLES}, INTRA)
  if videos.people is None:
    chosen = rng.choice(eligible, size=len(ROLES), replace=False)
  else:
    chosen = _videos_of_distinct_people(rng, eligible, videos.people, len(ROLES))
  slots = {role: _clip_slots(rng, VIDEO_SOURCE, int(v), int(videos.lengths[v]), k) for role, v in zip(ROLES, chosen)}
  return SampleSpec(slots, INTER)


def _videos_of_distinct_people(rng: np.random.Generator, eligible: np.ndarray, people: np.ndarray, n: int) -> list[int]:
  """n videos of n different people: each drawn uniformly among the videos of the people not yet drawn."""
  chosen = []
  for _ in range(n):
    taken = people[np.asarray(chosen, np.int64)]
    candidates = eligible[~np.isin(people[eligible], taken)]
    chosen.append(int(rng.choice(candidates)))
  return chosen


def sample_video_image(rng: np.random.Generator, videos: FrameIndex, images: Optional[FrameIndex], sigma: float, k: int) -> SampleSpec:
  """TFVGAN §3.1: three different images of the image set with probability sigma (INTER, with
  t and t-k the same image), else three frames of one video clip (INTRA)."""
  if rng.random() < sigma:
    chosen = rng.choice(len(images.lengths), size=len(ROLES), replace=False)
    slots = {}
    for role, v in zip(ROLES, chosen):
      position = int(rng.integers(0, images.lengths[v]))
      slots[role] = {"t": Slot(IMAGE_SOURCE, int(v), position), "prev": Slot(IMAGE_SOURCE, int(v), position)}
    return SampleSpec(slots, INTER)
  video = int(rng.choice(_eligible(videos, k)))
  length = int(videos.lengths[video])
  return SampleSpec({role: _clip_slots(rng, VIDEO_SOURCE, video, length, k) for role in ROLES}, INTRA)


SAMPLERS: dict[str, Callable[..., SampleSpec]] = {
    "intra_inter": sample_intra_inter,
    "video_image": sample_video_image,
}


def tail_length(length, fraction: float):
  """Frames held out at the end of a video of `length` frames: ceil(length * fraction), none at 0;
  an int for an int, an int64 array for an array of lengths."""
  lengths = np.asarray(length, np.int64)
  tails = np.minimum(lengths, np.ceil(lengths * float(fraction) - 1e-9).astype(np.int64)) if fraction > 0 else (
      np.zeros_like(lengths))
  return int(tails) if tails.ndim == 0 else tails


def check_held_out_tail(fraction, name: str = "config.data.held_out_tail") -> float:
  """The held-out fraction as a float in [0, 1), or ValueError naming `name`."""
  try:
    value = float(fraction)
  except (TypeError, ValueError):
    raise ValueError(f"{name}={fraction!r}: give the fraction of each video's frames held out, in [0, 1)") from None
  if not 0.0 <= value < 1.0:
    raise ValueError(f"{name}={fraction!r}: give the fraction of each video's frames held out, in [0, 1)")
  return value


def split_held_out_tail(videos: dict, fraction: float) -> tuple[dict, dict]:
  """({video: the frames trained on}, {video: the held-out tail}) of {video: records in frame order}.

  The last `tail_length(L, fraction)` frames of every video are held out, so that a handful of
  clips gives both the training frames and evaluation frames never trained on (the first frames of
  the tail follow the last trained ones: their content is unseen, their scene is not).
  """
  head, tail = {}, {}
  for video, order in videos.items():
    cut = len(order) - tail_length(len(order), fraction)
    head[video], tail[video] = order[:cut], order[cut:]
  return head, tail


def sample_rng(seed: int, index: int) -> np.random.Generator:
  """The generator of sample `index`: a pure function of (seed, index), so any sample can be
  drawn again in any order, by any worker, after any restart."""
  return np.random.default_rng([seed, index])
