"""Dynamic Training Sample Selection: branch ratios, frame rules, dataset checks."""

import numpy as np
import pytest

from tfvgan_jax.data import sampling
from tfvgan_jax.data.sampling import INTER, INTRA, FrameIndex

N_SAMPLES = 2400


def video_index(lengths, offset=0):
  videos, start = {}, offset
  for v, length in enumerate(lengths):
    # Records of a video are deliberately not contiguous or ordered on "disk".
    videos[f"vid{v:03d}"] = list(range(start + length - 1, start - 1, -1))
    start += length
  return FrameIndex.from_videos(videos)


VIDEOS = video_index([12, 7, 30, 5, 2, 9])
IMAGES = video_index([1] * 10, offset=1000)


def draw(name, sigma, k=1, n=N_SAMPLES, seed=0):
  fn = sampling.SAMPLERS[name]
  return [fn(sampling.sample_rng(seed, i), VIDEOS, IMAGES, sigma, k) for i in range(n)]


@pytest.mark.parametrize("name, ratio_branch", [("intra_inter", INTRA), ("video_image", INTER)])
@pytest.mark.parametrize("sigma", [0.0, 0.3, 0.5, 1.0])
def test_branch_ratio_matches_sigma(name, ratio_branch, sigma):
  specs = draw(name, sigma)
  hits = sum(s.branch == ratio_branch for s in specs)
  # 4.5 standard deviations of a binomial: fails by chance about once in 150,000 runs.
  bound = 4.5 * np.sqrt(N_SAMPLES * sigma * (1 - sigma))
  assert abs(hits - sigma * N_SAMPLES) <= bound


@pytest.mark.parametrize("k", [1, 3])
def test_intra_samples_share_one_video_with_frames_k_apart(k):
  for spec in draw("intra_inter", 1.0, k=k, n=500):
    assert spec.branch == INTRA
    videos = {slot.video for times in spec.slots.values() for slot in times.values()}
    assert len(videos) == 1
    (video,) = videos
    for times in spec.slots.values():
      assert times["t"].position - times["prev"].position == k
      assert 0 <= times["prev"].position and times["t"].position < VIDEOS.lengths[video]
      assert times["t"].source == sampling.VIDEO_SOURCE


def test_inter_samples_come_from_three_distinct_videos():
  for spec in draw("intra_inter", 0.0, k=2, n=500):
    assert spec.branch == INTER
    assert len({spec.slots[role]["t"].video for role in sampling.ROLES}) == 3
    for times in spec.slots.values():
      assert times["t"].video == times["prev"].video and times["t"].position - times["prev"].position == 2
      assert VIDEOS.lengths[times["t"].video] > 2, "videos too short for k are never drawn"


def test_image_set_samples_have_identical_t_and_prev():
  for spec in draw("video_image", 1.0, n=300):
    assert spec.branch == INTER
    assert len({spec.slots[role]["t"].video for role in sampling.ROLES}) == 3
    for times in spec.slots.values():
      assert times["t"] == times["prev"] and times["t"].source == sampling.IMAGE_SOURCE


def test_video_image_video_branch_is_a_clip():
  for spec in draw("video_image", 0.0, n=200):
    assert spec.branch == INTRA
    assert len({slot.video for times in spec.slots.values() for slot in times.values()}) == 1


def test_same_seed_and_index_same_sample_in_any_order():
  forward = draw("intra_inter", 0.5, n=50)
  backward = [sampling.sample_intra_inter(sampling.sample_rng(0, i), VIDEOS, IMAGES, 0.5, 1) for i in reversed(range(50))]
  assert forward == backward[::-1]
  assert draw("intra_inter", 0.5, n=50, seed=1) != forward


def test_every_long_enough_video_and_frame_gets_drawn():
  specs = draw("intra_inter", 1.0)
  seen = {(slot.video, slot.position) for s in specs for times in s.slots.values() for slot in times.values()}
  want = {(v, p) for v in range(len(VIDEOS.lengths)) if VIDEOS.lengths[v] > 1 for p in range(VIDEOS.lengths[v])}
  assert seen == want


def test_frame_index_maps_positions_to_records_in_frame_order():
  assert VIDEOS.video_ids[0] == "vid000" and VIDEOS.record(0, 0) == 11 and VIDEOS.record(0, 11) == 0
  assert VIDEOS.record(2, 0) == 12 + 7 + 29


def test_dataset_checks_name_the_dataset():
  few = video_index([5, 5])
  # Two videos: no swap can be drawn, but self-reenactment can (the pipeline then trains only that).
  sampling.check_sampling("intra_inter", few, None, 1, name="corpus_a")
  assert sampling.people_count(few, 1) == 2 and sampling.people_count(video_index([5, 1, 5]), 1) == 2
  spec = sampling.sample_intra_inter(np.random.default_rng(0), video_index([5]), None, 1.0, 1)
  assert spec.branch == sampling.INTRA
  short = video_index([1, 1, 1, 1])
  with pytest.raises(sampling.DatasetTooSmall, match="corpus_b.*no video has more than k=1"):
    sampling.check_sampling("intra_inter", short, None, 1, name="corpus_b")
  with pytest.raises(sampling.DatasetTooSmall, match="corpus_c.*image set; it has 0"):
    sampling.check_sampling("video_image", VIDEOS, None, 1, name="corpus_c")
  with pytest.raises(ValueError, match="unknown data.sampling 'random'"):
    sampling.check_sampling("random", VIDEOS, None, 1)
  sampling.check_sampling("intra_inter", VIDEOS, None, 1)
  sampling.check_sampling("video_image", few, IMAGES, 1)


def test_held_out_tail_is_the_last_ceil_fraction_of_every_video():
  # Hand-worked: 10 frames at 0.2 -> the last 2; 7 -> ceil(1.4) = 2; 1 -> 1; 5 at 0.2 -> exactly 1.
  assert [sampling.tail_length(n, 0.2) for n in (10, 7, 1, 5, 0)] == [2, 2, 1, 1, 0]
  assert sampling.tail_length(10, 0.0) == 0
  videos = {"a": np.arange(10), "b": np.arange(100, 107)}
  head, tail = sampling.split_held_out_tail(videos, 0.2)
  np.testing.assert_array_equal(head["a"], np.arange(8))
  np.testing.assert_array_equal(tail["a"], [8, 9])
  np.testing.assert_array_equal(tail["b"], [105, 106])
  for name in videos:  # a partition of each video, in frame order
    np.testing.assert_array_equal(np.concatenate([head[name], tail[name]]), videos[name])
  assert sampling.check_held_out_tail("0.25") == 0.25
  for bad in (1.0, -0.1, "most"):
    with pytest.raises(ValueError, match=r"config.data.held_out_tail=.*in \[0, 1\)"):
      sampling.check_held_out_tail(bad)


def test_inter_samples_take_three_people_when_videos_share_one():
  videos = {f"{person}/clip{c}": list(range(10 * i + 5 * c, 10 * i + 5 * c + 5))
            for i, person in enumerate(("alice", "bob", "carol")) for c in range(2)}
  assert sampling.person_of("alice/clip0", "folder") == "alice" and sampling.person_of("solo", "folder") == "solo"
  assert sampling.person_of("alice/clip0", "video") == "alice/clip0"
  with pytest.raises(ValueError, match="config.data.people='face'"):
    sampling.person_of("a", "face")
  by_video = FrameIndex.from_videos(videos)
  assert by_video.people is None  # every video its own person: the papers' draw, unchanged
  index = FrameIndex.from_videos(videos, "folder")
  assert index.people.tolist() == [0, 0, 1, 1, 2, 2] and sampling.people_count(index, 1) == 3
  drawn = set()
  for i in range(600):
    spec = sampling.sample_intra_inter(sampling.sample_rng(0, i), index, None, 0.0, 1)
    chosen = [spec.slots[role]["t"].video for role in sampling.ROLES]
    assert len({int(index.people[v]) for v in chosen}) == 3
    drawn.update(chosen)
  assert drawn == set(range(6))  # every clip of every person still takes part
  # With 'video' the same dataset gives same-person triples (clip0 and clip1 of one person).
  same_person = 0
  for i in range(600):
    spec = sampling.sample_intra_inter(sampling.sample_rng(0, i), by_video, None, 0.0, 1)
    chosen = [spec.slots[role]["t"].video for role in sampling.ROLES]
    same_person += len({int(index.people[v]) for v in chosen}) < 3
  assert same_person > 100


def test_the_index_head_matches_the_held_out_split_without_copying_frames():
  videos = {f"v{i}": np.arange(100 * i, 100 * i + n) for i, n in enumerate((10, 7, 1, 5))}
  index = FrameIndex.from_videos(videos)
  head = index.head(0.2)
  expected, _ = sampling.split_held_out_tail(videos, 0.2)
  assert head.lengths.tolist() == [len(expected[v]) for v in head.video_ids] == [8, 5, 0, 4]
  assert head.records is index.records  # shared
  assert [head.record(0, p) for p in range(8)] == expected["v0"].tolist()
  compact = FrameIndex(("a", "b"), np.array([0, 10]), np.array([10, 5]), None).head(0.2)
  assert compact.lengths.tolist() == [8, 4] and compact.record(1, 3) == 13
  assert index.head(0.0) is index
