"""The dataset written by Beam workers: shard plans, shard files, the launching machine's metadata,
the compact video index. Prepared videos are made here from small arrays (no detection, no fit)."""

import json
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow_datasets as tfds
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from etils import epath

from data_prep import build
from helpers import raw_records
from tfvgan_jax import face3d, files
from tfvgan_jax.data import records, sampling
from tfvgan_jax.prep import clip

SIZE = 16


@pytest.fixture(scope="module")
def model():
  return face3d.procedural_model(detail="low")


def prepared_video(folder, model, video_id, frames, seed):
  """A prepared video as `build.PrepareVideo` writes it (.npz and side file), from random arrays;
  returns its status line."""
  rng = np.random.default_rng(seed)
  jpegs = [records.encode_jpeg(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(frames)]
  arrays = dict(
      key=np.str_("k"), video_id=np.str_(video_id), source_path=np.str_(f"/videos/{video_id}.mp4"),
      frames=np.arange(frames, dtype=np.int64) * 2, jpeg_bytes=np.frombuffer(b"".join(jpegs), np.uint8),
      jpeg_ends=np.cumsum([len(j) for j in jpegs]).astype(np.int64),
      id_coeffs=rng.standard_normal(model.num_id).astype(np.float32),
      exp_coeffs=rng.standard_normal((frames, model.num_exp)).astype(np.float32),
      cameras=rng.standard_normal((frames, 6)).astype(np.float32),
      residual=rng.uniform(0.1, 1, frames).astype(np.float32),
      landmarks=rng.uniform(0, SIZE, (frames, 68, 2)).astype(np.float32),
      crop_to_source=np.eye(2, 3, dtype=np.float32), interocular=np.float32(5.0),
      frames_decoded=np.int64(frames), frames_declared=np.int64(frames), pose_jitter=np.zeros(3, np.float32))
  target = epath.Path(folder) / f"{build.prepared_name(video_id)}.npz"
  clip.write_npz_atomically(target, **arrays)
  status = build._status_from(arrays, 0)
  build._write_side_file(target, "k", f"/videos/{video_id}.mp4", status)
  return dict(status, status="written", video_id=video_id, prepared=os.fspath(target))


def write_shards(statuses, dataset, runner_args=()):
  """WriteShards over `statuses` with Beam's FnApiRunner; returns the shard lines."""
  out = epath.Path(dataset.directory).parent / "lines"
  options = beam.options.pipeline_options.PipelineOptions(list(runner_args))
  with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline:
    _ = (pipeline | beam.Create(statuses) | build.WriteShards(dataset)
         | beam.io.WriteToText(os.fspath(out), shard_name_template=""))
  return [json.loads(line) for line in out.read_text().splitlines()]


def test_shard_plan_is_sorted_balanced_and_never_empty():
  videos = [(f"v{i:03d}", 1000 * (1 + i % 7), 10) for i in range(50)]
  plan = build.shard_plan(list(reversed(videos)), 4)
  assert plan == build.shard_plan(videos, 4) and plan["count"] == 4
  assert plan["firsts"] == sorted(plan["firsts"]) and plan["firsts"][0] == "v000"
  sizes = np.zeros(4)
  for video_id, image_bytes, frames in videos:
    sizes[build.shard_of(video_id, plan)] += image_bytes + frames * build._RECORD_OVERHEAD
  assert sizes.min() > 0.7 * sizes.max()
  assert build.shard_plan(videos[:3], 10)["count"] == 3  # never more shards than videos
  assert build.shard_plan(videos, 0)["count"] == 1  # TFDS's rule: 64 MiB or more per shard
  assert build.shard_plan([], 0) == {"count": 0, "firsts": []}
  # TFDS's own rule for 2,000 videos of 60 frames of 20 kB (2.6 GB with the other fields): the
  # largest power of two of shards between 64 MiB and 1 GiB each.
  assert build.shard_plan([(f"{i:07d}", 60 * 20_000, 60) for i in range(2000)], 0)["count"] == 32


def test_workers_write_a_tfds_dataset_that_reads_like_the_single_machine_one(tmp_path, model):
  prepared = tmp_path / "prepared"
  statuses = [prepared_video(prepared, model, f"id{v % 3}/clip{v}", 3 + v % 4, v) for v in range(7)]
  staging = files.staging_dir(tmp_path / "videos" / "1.0.0")
  dataset = build.DatasetSettings(directory=staging, name="videos",
                                  metadata=tuple(records.dataset_metadata(model, SIZE).items()), num_shards=3)
  lines = write_shards(statuses, dataset)
  # A worker that died mid-shard left its temporary file; the launching machine removes it.
  (epath.Path(staging) / files.partial_name("videos-train.array_record-00001-of-00003")).write_bytes(b"half")
  build.finish_dataset(dataset, lines)
  files.replace_dir(staging, tmp_path / "videos" / "1.0.0")
  path = tmp_path / "videos" / "1.0.0"
  assert sorted(os.listdir(path)) == sorted(["dataset_info.json", "features.json", "metadata.json",
                                             *[f"videos-train.array_record-0000{k}-of-00003" for k in range(3)],
                                             "video_index-train.npz"])

  old = records.write_dataset(tmp_path / "old", "videos", build.prepared_examples(statuses), model, SIZE)
  new_frames, old_frames = records.open_dataset(path), records.open_dataset(old)
  assert sum(s["frames"] for s in statuses) == len(new_frames) == len(old_frames)
  assert raw_records(new_frames) == raw_records(old_frames)
  for name in ("features.json", "metadata.json"):
    assert (path / name).read_text() == (old / name).read_text()
  info, old_info = (json.loads((p / "dataset_info.json").read_text()) for p in (path, old))
  assert info["splits"][0].pop("shardLengths") != old_info["splits"][0].pop("shardLengths")
  assert info == old_info  # numBytes too
  assert len(tfds.data_source("videos", data_dir=os.fspath(tmp_path), split="train")) == len(new_frames)

  index = records.load_video_index(new_frames)
  assert index.records is None  # one (start, length) per video
  for video_id, order in records.video_index(new_frames).items():
    assert [int(new_frames[int(i)]["frame_index"]) for i in order] == [
        int(old_frames[int(i)]["frame_index"]) for i in records.video_index(old_frames)[video_id]]
    assert {new_frames[int(i)]["video_id"] for i in order} == {video_id}
  frame_index = sampling.FrameIndex(*index)
  expected = sampling.FrameIndex.from_videos(records.video_index(new_frames))
  for v in range(len(index.video_ids)):
    assert [frame_index.record(v, t) for t in range(int(index.lengths[v]))] == [
        expected.record(v, t) for t in range(int(expected.lengths[v]))]


def test_a_shard_is_written_whole_or_not_at_all(tmp_path, model):
  prepared = tmp_path / "prepared"
  examples = list(build.prepared_examples([prepared_video(prepared, model, "a", 3, 0),
                                           prepared_video(prepared, model, "b", 2, 1)]))
  metadata = records.dataset_metadata(model, SIZE)
  path = records.shard_path(tmp_path, "videos", "train", 0, 1)
  for bad, message in ((examples[:3] + [examples[0]], "comes after frame 4"),
                       (examples[:4] + [examples[0]], "video 'a' comes back after another video")):
    with pytest.raises(ValueError, match=message):
      records.write_shard(path, bad, metadata)
    assert os.listdir(tmp_path) == ["prepared"]
  stats = records.write_shard(path, examples, metadata)
  assert (stats.records, stats.video_ids, stats.lengths) == (5, ["a", "b"], [3, 2])
  assert sorted(os.listdir(tmp_path)) == ["prepared", path.name]


def test_a_damaged_prepared_file_is_named(tmp_path, model):
  status = prepared_video(tmp_path, model, "a", 3, 0)
  epath.Path(status["prepared"]).write_bytes(b"not an npz")
  with pytest.raises(ValueError, match="a-.*npz: this prepared video cannot be read.*delete it"):
    list(build.prepared_examples([status]))
  # The next run prepares it again: its side file no longer describes it.
  assert build._reusable_status(epath.Path(status["prepared"]), "k", "/videos/a.mp4", 0) is None


def test_a_prepared_file_without_side_file_is_reused_from_its_small_arrays(tmp_path, model):
  status = prepared_video(tmp_path, model, "a", 3, 0)
  target = epath.Path(status["prepared"])
  build._side_file(target).unlink()
  reused = build._reusable_status(target, "k", "/videos/a.mp4", 0)
  assert reused == {k: v for k, v in status.items() if k not in ("status", "video_id")}
  assert build._side_file(target).exists()
  assert build._reusable_status(target, "other key", "/videos/a.mp4", 0) is None


def test_video_index_of_many_videos_holds_no_per_frame_array(tmp_path):
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 50, 2000)
  ids = [f"id{i % 97:05d}/{i:06d}" for i in rng.permutation(len(lengths))]
  shard = tmp_path / "x"
  shard.write_bytes(b"")
  index = records.write_video_index(tmp_path, "train", [shard], ids, lengths)
  assert index.records is None and index.video_ids == tuple(sorted(ids))
  starts = dict(zip(ids, np.concatenate([[0], np.cumsum(lengths)[:-1]])))
  assert [int(s) for s in index.starts] == [int(starts[v]) for v in index.video_ids]
  with np.load(tmp_path / "video_index-train.npz") as stored:
    assert max(stored[k].size for k in stored.files) <= len(ids) * 16  # ids' bytes; nothing per frame
  with pytest.raises(records.DatasetError, match="'a' is in more than one place"):
    records.write_video_index(tmp_path, "train", [shard], ["a", "b", "a"], [1, 2, 3])


def test_the_launching_machine_refuses_a_missing_or_unreported_shard(tmp_path, model):
  statuses = [prepared_video(tmp_path / "prepared", model, f"v{v}", 2, v) for v in range(3)]
  staging = files.staging_dir(tmp_path / "videos" / "1.0.0")
  dataset = build.DatasetSettings(directory=staging, name="videos",
                                  metadata=tuple(records.dataset_metadata(model, SIZE).items()), num_shards=3)
  lines = write_shards(statuses, dataset)
  with pytest.raises(RuntimeError, match=r"reported shards \[0, 2\], not each of 0..2 once"):
    build.finish_dataset(dataset, [line for line in lines if line["shard"] != 1])
  (epath.Path(staging) / lines[0]["file"]).unlink()
  with pytest.raises(RuntimeError, match=f"{lines[0]['file']}: a shard the workers reported is missing"):
    build.finish_dataset(dataset, lines)


def test_an_index_of_the_per_frame_layout_is_rebuilt(tmp_path, model):
  statuses = [prepared_video(tmp_path / "prepared", model, f"v{v}", 3, v) for v in range(2)]
  path = records.write_dataset(tmp_path, "videos", build.prepared_examples(statuses), model, SIZE)
  frames = records.open_dataset(path)
  expected = records.video_index(frames)
  cache = path / "video_index-train.npz"
  ids, order = np.array([frames[i]["video_id"] for i in range(len(frames))]), np.arange(len(frames))
  np.savez(cache, fingerprint=np.str_(records._fingerprint(frames)), video_id=ids, frame_index=order)
  again = records.video_index(records.open_dataset(path))
  assert again.keys() == expected.keys()
  for video_id in expected:
    np.testing.assert_array_equal(again[video_id], expected[video_id])
  with np.load(cache) as stored:
    assert int(stored["version"]) == records._INDEX_VERSION


def test_a_failed_move_into_an_object_store_keeps_the_staged_dataset(tmp_path):
  staging, target = epath.Path(tmp_path / ".partial-new"), epath.Path(tmp_path / "videos" / "1.0.0")
  staging.mkdir()
  (staging / "dataset_info.json").write_text("{}")
  (staging / "videos-train.array_record-00000-of-00001").write_bytes(b"records")
  target.mkdir(parents=True)
  (target / "old").write_text("old")

  def failing(sources, destinations):
    raise OSError("quota exceeded")

  with pytest.raises(records.StagedDatasetKept, match=r"quota exceeded.*complete new files are kept in .*partial-new"):
    records.move_into_store(staging, target, failing)
  assert sorted(p.name for p in staging.iterdir()) == ["dataset_info.json", "videos-train.array_record-00000-of-00001"]

  def moving(sources, destinations):
    for source, destination in zip(sources, destinations):
      os.makedirs(os.path.dirname(destination), exist_ok=True)
      os.replace(source, destination)

  records.move_into_store(staging, target, moving)
  assert sorted(p.name for p in target.iterdir()) == ["dataset_info.json", "videos-train.array_record-00000-of-00001"]
