"""Per-frame records: TFDS ArrayRecord round trip, model check, video index, damaged files, grain."""

import io
import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
import tempfile

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from PIL import Image

from tfvgan_jax import face3d, files
from tfvgan_jax.data import records
from tfvgan_jax.data.sampling import FrameIndex

SIZE = 32
VIDEOS = ("clip_b", "clip_a", "clip_c")
FRAMES = 6


@pytest.fixture(scope="module")
def model():
  return face3d.procedural_model(detail="low")


def smooth_image(seed):
  """[SIZE, SIZE, 3] uint8 gradients: JPEG keeps them within a few levels."""
  yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
  phase = seed * 0.37
  return np.stack([60 + 120 * xx, 50 + 100 * yy + 40 * np.sin(phase), 90 + 80 * xx * yy], -1).astype(np.uint8)


def make_examples(model, videos=VIDEOS, frames=FRAMES):
  """Examples in video-major, frame order; all values distinct per frame."""
  rng = np.random.default_rng(7)
  examples = []
  for v, video in enumerate(videos):
    for t in range(frames):
      examples.append({
          "image": smooth_image(v * frames + t),
          "id_coeffs": rng.standard_normal(model.num_id),
          "exp_coeffs": rng.standard_normal(model.num_exp),
          "camera": np.array([0.1 * t, -0.2, 0.05, 12.5, 16.0 + t, 15.5]),
          "landmarks": rng.uniform(0, SIZE, (68, 2)),
          "video_id": video,
          "frame_index": 10 + 3 * t,  # not contiguous: frames dropped by a detector leave gaps
          "crop_to_source": np.array([[2.0, 0.0, 100.0 + t], [0.0, 2.0, 50.0]]),
          "source_path": f"/videos/{video}.mp4",
          "fit_residual": np.nan if v == 0 else 0.01 * t,
      })
  # JPEG bytes are stored as given.
  examples[1]["image"] = records.encode_jpeg(smooth_image(99), quality=80)
  return examples


@pytest.fixture(scope="module")
def written(tmp_path_factory, model):
  """(path, examples): a 2-shard dataset written once for the module; tests copy it to damage it."""
  examples = make_examples(model)
  path = records.write_dataset(tmp_path_factory.mktemp("data"), "frames", iter(examples), model, SIZE,
                               num_shards=2)
  return path, examples


@pytest.fixture
def copy(written, tmp_path):
  """A private copy of the written dataset."""
  target = tmp_path / "frames" / "1.0.0"
  shutil.copytree(written[0], target)
  return target


def by_frame(dataset):
  return {(dataset[i]["video_id"], int(dataset[i]["frame_index"])): i for i in range(len(dataset))}


def test_round_trip(written, model):
  path, examples = written
  dataset = records.open_dataset(path)
  assert len(dataset) == len(examples) and len(dataset.files) == 2
  assert dataset.metadata["model_name"] == model.name
  assert dataset.metadata["model_hash"] == face3d.content_hash(model)
  assert (dataset.metadata["image_size"], dataset.metadata["num_id"], dataset.metadata["num_exp"]) == (SIZE, 40, 10)
  index = by_frame(dataset)
  for number, example in enumerate(examples):
    record = dataset[index[(example["video_id"], example["frame_index"])]]
    assert set(record) == set(records.FIELDS)
    for key in ("id_coeffs", "exp_coeffs", "camera", "landmarks", "crop_to_source"):
      assert record[key].dtype == np.float32
      np.testing.assert_array_equal(record[key], np.float32(example[key]), err_msg=key)
    np.testing.assert_array_equal(record["fit_residual"], np.float32(example["fit_residual"]))
    assert record["fit_residual"].dtype == np.float32 and record["frame_index"].dtype == np.int64
    assert record["source_path"] == example["source_path"]
    assert record["image"].dtype == np.uint8 and record["image"].shape == (SIZE, SIZE, 3)
    if number == 1:
      np.testing.assert_array_equal(record["image"], np.asarray(Image.open(io.BytesIO(example["image"]))))
    else:
      assert np.abs(record["image"].astype(float) - example["image"]).mean() < 3
  assert dataset[-1]["video_id"] == dataset[len(dataset) - 1]["video_id"]
  with pytest.raises(IndexError):
    dataset[len(dataset)]
  # A plain TFDS dataset: TFDS reads it back too, and nothing imported TensorFlow.
  assert tfds.builder_from_directory(os.fspath(path)).info.metadata["model_hash"] == face3d.content_hash(model)
  assert len(tfds.data_source("frames", data_dir=os.fspath(path.parent.parent), split="train")) == len(examples)
  assert os.listdir(path.parent.parent) == ["frames"]
  assert "tensorflow" not in sys.modules


def test_check_model_refuses_another_model(written, model):
  path = written[0]
  dataset = records.open_dataset(path)
  for source in (dataset, path, path.parent, dataset.info):
    records.check_model(source, model)
  other = face3d.procedural_model(seed=1, detail="low")
  with pytest.raises(ValueError) as caught:
    records.check_model(dataset, other)
  message = str(caught.value)
  for part in (os.fspath(path), model.name, other.name, face3d.content_hash(model), face3d.content_hash(other)):
    assert part in message


def test_video_index_groups_and_orders_shuffled_records(written):
  path, examples = written
  dataset = records.open_dataset(path)
  videos = records.video_index(dataset)
  assert sorted(videos) == sorted(VIDEOS)
  for video, indices in videos.items():
    assert indices.dtype == np.int64
    assert [dataset[i]["video_id"] for i in indices] == [video] * FRAMES
    assert [int(dataset[i]["frame_index"]) for i in indices] == [10 + 3 * t for t in range(FRAMES)]
  merged = np.concatenate([videos[v] for v in sorted(videos)])
  assert sorted(merged) == list(range(len(examples)))
  # TFDS shuffled the records: written video by video in frame order, they are not read so.
  written_order = [by_frame(dataset)[(e["video_id"], e["frame_index"])] for e in examples]
  assert written_order != list(range(len(examples)))
  FrameIndex.from_videos(videos)


def test_video_index_is_cached_and_rebuilt_when_files_change(copy, monkeypatch):
  scans = []
  scan = records._scan_fields

  def counting_scan(dataset):
    scans.append(dataset.path)
    return scan(dataset)

  monkeypatch.setattr(records, "_scan_fields", counting_scan)
  cache = copy / "video_index-train.npz"
  assert cache.exists()  # write_dataset built it
  first = records.video_index(records.open_dataset(copy))
  assert scans == []
  cache.unlink()
  assert records.video_index(records.open_dataset(copy)).keys() == first.keys()
  assert len(scans) == 1 and cache.exists()
  again = records.video_index(records.open_dataset(copy))
  assert len(scans) == 1
  for video in first:
    np.testing.assert_array_equal(again[video], first[video])
  shard = records.open_dataset(copy).files[0]
  stat = os.stat(shard)
  os.utime(shard, (stat.st_atime + 5, stat.st_mtime + 5))
  records.video_index(records.open_dataset(copy))
  assert len(scans) == 2


def test_truncated_or_garbage_shard_names_the_file(copy):
  shard = records.open_dataset(copy).files[1]
  data = shard.read_bytes()
  shard.write_bytes(data[: len(data) // 2])
  with pytest.raises(records.DatasetError, match=re.escape(f"{shard}: not a readable ArrayRecord file")):
    records.open_dataset(copy)
  shard.write_bytes(b"not an array record file" * 100)
  with pytest.raises(records.DatasetError, match=re.escape(f"{shard}: not a readable ArrayRecord file")):
    records.open_dataset(copy)
  shard.unlink()
  with pytest.raises(records.DatasetError, match=re.escape(f"{shard}: shard file is missing")):
    records.open_dataset(copy)


def test_missing_dataset_and_split(tmp_path, copy):
  with pytest.raises(FileNotFoundError, match="no such dataset directory"):
    records.open_dataset(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="no dataset_info.json"):
    records.open_dataset(tmp_path)
  with pytest.raises(records.DatasetError, match="no split 'test'"):
    records.open_dataset(copy, split="test")


def test_record_missing_a_field_names_file_and_record(copy):
  dataset = records.open_dataset(copy)
  shard = dataset.files[0]
  features = dataset.info.features
  partial = tfds.features.FeaturesDict({key: features[key] for key in features.keys() if key != "landmarks"})
  raws = [dataset.read_raw(i) for i in range(int(dataset.lengths[0]))]
  writer = array_record_module.ArrayRecordWriter(os.fspath(shard), "group_size:1")
  for raw in raws:
    example = features.deserialize_example_np(raw, decoders={"image": tfds.decode.SkipDecoding()})
    del example["landmarks"]
    writer.write(partial.serialize_example(partial.encode_example(example)))
  writer.close()
  dataset = records.open_dataset(copy)
  expected = f"{shard}: record 2 (dataset index 2): record lacks fields ['landmarks']"
  with pytest.raises(records.DatasetError, match=re.escape(expected)):
    dataset[2]
  dataset[int(dataset.lengths[0])]  # the other shard is intact


def test_write_refuses_bad_examples_and_leaves_nothing(tmp_path, model):
  good = make_examples(model, videos=("v",), frames=2)
  cases = {
      "missing fields \\['camera'\\]": [good[0], {k: v for k, v in good[1].items() if k != "camera"}],
      "id_coeffs must have shape \\(40,\\)": [good[0], dict(good[1], id_coeffs=np.zeros(39))],
      "image must be uint8 \\[32, 32, 3\\]": [good[0], dict(good[1], image=np.zeros((16, 16, 3), np.uint8))],
      "examples 0 and 1 are both frame 10 of video 'v'": [good[0], dict(good[1], frame_index=10)],
      "no examples for split 'train'": [],
  }
  for message, examples in cases.items():
    with pytest.raises(ValueError, match=message):
      records.write_dataset(tmp_path, "bad", examples, model, SIZE)
    assert not (tmp_path / "bad").exists()
  with pytest.raises(ValueError, match="lower case"):
    records.write_dataset(tmp_path, "Bad-name", good, model, SIZE)
  path = records.write_dataset(tmp_path, "twice", good, model, SIZE)
  with pytest.raises(FileExistsError, match="overwrite=True"):
    records.write_dataset(tmp_path, "twice", good, model, SIZE)
  records.write_dataset(tmp_path, "twice", good[:1], model, SIZE, overwrite=True)
  assert len(records.open_dataset(path)) == 1


def test_overwrite_keeps_the_old_version_until_the_new_one_is_complete(tmp_path, model, monkeypatch):
  temporary = tmp_path / "tmp"
  temporary.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(temporary))
  old = make_examples(model, videos=("old",), frames=2)
  path = records.write_dataset(tmp_path / "out", "data", old, model, SIZE)
  assert os.listdir(temporary) == []  # TFDS's own temporary folders too
  tmp_path = tmp_path / "out"

  def failing_midway():
    yield from make_examples(model, videos=("new",), frames=2)
    raise KeyboardInterrupt  # killed while the new records are written

  with pytest.raises(KeyboardInterrupt):
    records.write_dataset(tmp_path, "data", failing_midway(), model, SIZE, overwrite=True)
  assert sorted(records.video_index(records.open_dataset(path))) == ["old"]
  assert os.listdir(tmp_path / "data") == ["1.0.0"]
  # A kill -9 leaves the staging folder: the next write removes it (its process has ended).
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  leftover = tmp_path / "data" / files.partial_name("1.0.0").replace(f"{os.getpid()}@", f"{child.pid}@", 1)
  (leftover / "data" / "1.0.0").mkdir(parents=True)
  records.write_dataset(tmp_path, "data", make_examples(model, videos=("new",), frames=2), model, SIZE,
                        overwrite=True)
  assert sorted(records.video_index(records.open_dataset(path))) == ["new"]
  assert os.listdir(tmp_path / "data") == ["1.0.0"]
  with pytest.raises(ValueError, match="lower case"):
    records.check_name("Videos")


def test_an_object_store_overwrite_keeps_the_old_version_until_the_new_one_is_built(tmp_path, model, monkeypatch):
  # The object-store branch, run on a local folder: it stages beside the target and moves file by
  # file, so a build that fails leaves the earlier version, and a failed move keeps the new files.
  monkeypatch.setattr(files, "is_remote", lambda path: True)
  path = records.write_dataset(tmp_path, "data", make_examples(model, videos=("old",), frames=2), model, SIZE)

  def failing_midway():
    yield from make_examples(model, videos=("new",), frames=2)
    raise ValueError("bad frame")

  with pytest.raises(ValueError, match="bad frame"):
    records.write_dataset(tmp_path, "data", failing_midway(), model, SIZE, overwrite=True)
  assert sorted(records.video_index(records.open_dataset(path))) == ["old"]
  assert os.listdir(tmp_path / "data") == ["1.0.0"]

  def failing_move(sources, destinations):
    raise OSError("quota exceeded")

  monkeypatch.setattr(records.move_into_store, "__defaults__", (failing_move,))
  new = make_examples(model, videos=("new",), frames=3)
  with pytest.raises(records.StagedDatasetKept, match="quota exceeded") as raised:
    records.write_dataset(tmp_path, "data", new, model, SIZE, overwrite=True)
  kept = pathlib.Path(raised.value.staging)
  assert kept.parent.parent.parent == tmp_path / "data" and kept.name == "1.0.0"
  assert any(name.endswith(".array_record-00000-of-00001") for name in os.listdir(kept))
  monkeypatch.undo()
  monkeypatch.setattr(files, "is_remote", lambda path: True)
  records.write_dataset(tmp_path, "data", new, model, SIZE, overwrite=True)
  dataset = records.open_dataset(path)
  assert sorted(records.video_index(dataset)) == ["new"] and len(dataset) == 3


def test_grain_reads_it_as_a_source(written):
  dataset = records.open_dataset(written[0])
  expected = dataset[3]
  assert grain.MapDataset.source(dataset)[3]["video_id"] == expected["video_id"]
  np.testing.assert_array_equal(grain.MapDataset.source(dataset)[3]["image"], expected["image"])
  sampler = grain.samplers.IndexSampler(len(dataset), shard_options=grain.sharding.NoSharding(), shuffle=True,
                                        num_epochs=1, seed=0)
  loader = grain.DataLoader(data_source=dataset, sampler=sampler, worker_count=0)
  seen = sorted((r["video_id"], int(r["frame_index"])) for r in loader)
  assert seen == sorted(by_frame(dataset))
  # Worker processes get the source pickled; it reopens its files there.
  clone = pickle.loads(pickle.dumps(dataset))
  np.testing.assert_array_equal(clone[3]["landmarks"], expected["landmarks"])
