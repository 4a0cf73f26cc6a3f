"""The grain input pipeline over real ArrayRecord frame datasets, with DTSS."""

import ml_collections
import numpy as np
import pytest

from tfvgan_jax import face3d
from tfvgan_jax.data import pipeline, records, sampling, synthetic

SIZE = 32
ROLE_KEYS = [f"{role}_{time}" for role in sampling.ROLES for time in sampling.TIMES]


@pytest.fixture(scope="module")
def model():
  return face3d.procedural_model(detail="low")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, model):
  out = tmp_path_factory.mktemp("data")
  videos = records.write_dataset(out, "videos", synthetic.corpus_examples(model, 5, 6, SIZE, seed=0), model, SIZE)
  images = records.write_dataset(out, "images", synthetic.corpus_examples(model, 4, 1, SIZE, seed=1), model, SIZE)
  return videos, images


def data_config(videos, images="", **overrides):
  config = ml_collections.ConfigDict(dict(videos=str(videos), images=str(images), sampling="intra_inter", sigma=0.5,
                                          frame_gap=1, batch_size=4, seed=0, num_workers=0, num_threads=1, prefetch=1))
  config.update(overrides)
  return config


def take(dataset, n):
  iterator = iter(dataset)
  return [next(iterator) for _ in range(n)]


def assert_same_batches(a, b):
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["index"], y["index"])
    for key in ROLE_KEYS:
      for field, value in x[key].items():
        np.testing.assert_array_equal(value, y[key][field])


def test_batch_layout(corpus, model):
  (batch,) = take(pipeline.training_dataset(data_config(corpus[0]), model), 1)
  assert set(batch) == set(ROLE_KEYS) | {"branch", "index"}
  frame = batch["identity_t"]
  assert frame["image"].shape == (4, SIZE, SIZE, 3) and frame["image"].dtype == np.uint8
  assert frame["id_coeffs"].shape == (4, 40) and frame["exp_coeffs"].shape == (4, 10)
  assert frame["camera"].shape == (4, 6) and frame["landmarks"].shape == (4, 68, 2)
  assert frame["video"].dtype == np.int32 and frame["frame_index"].dtype == np.int32
  np.testing.assert_array_equal(batch["index"], np.arange(4))


def test_frames_follow_the_sampling_rules(corpus, model):
  batches = take(pipeline.training_dataset(data_config(corpus[0], frame_gap=2, batch_size=8), model), 4)
  for batch in batches:
    for b in range(8):
      videos = {batch[key]["video"][b] for key in ROLE_KEYS}
      for role in sampling.ROLES:
        t, prev = batch[f"{role}_t"], batch[f"{role}_prev"]
        assert t["video"][b] == prev["video"][b] and t["frame_index"][b] - prev["frame_index"][b] == 2
        # Frames of one video share its identity: the record is the frame the sample names.
        np.testing.assert_array_equal(t["id_coeffs"][b], prev["id_coeffs"][b])
      assert len(videos) == (1 if batch["branch"][b] == sampling.INTRA else 3)


def test_image_set_sampling(corpus, model):
  config = data_config(corpus[0], corpus[1], sampling="video_image", sigma=1.0)
  (batch,) = take(pipeline.training_dataset(config, model), 1)
  assert np.all(batch["branch"] == sampling.INTER)
  for role in sampling.ROLES:
    assert np.all(batch[f"{role}_t"]["source"] == sampling.IMAGE_SOURCE)
    np.testing.assert_array_equal(batch[f"{role}_t"]["image"], batch[f"{role}_prev"]["image"])


def test_same_seed_same_batches_and_restored_iterator_continues(corpus, model):
  config = data_config(corpus[0])
  first = take(pipeline.training_dataset(config, model), 5)
  assert_same_batches(first, take(pipeline.training_dataset(config, model), 5))
  other = take(pipeline.training_dataset(data_config(corpus[0], seed=1), model), 1)[0]
  assert any(not np.array_equal(other[k]["image"], first[0][k]["image"]) for k in ROLE_KEYS)
  iterator = iter(pipeline.training_dataset(config, model))
  for _ in range(2):
    next(iterator)
  state = iterator.get_state()
  resumed = iter(pipeline.training_dataset(config, model))
  resumed.set_state(state)
  assert_same_batches(first[2:], [next(resumed) for _ in range(3)])


def test_processes_read_disjoint_slices_of_the_global_batch(corpus, model):
  config = data_config(corpus[0], batch_size=4)
  single = take(pipeline.training_dataset(config, model, process_index=0, process_count=1), 2)
  parts = [take(pipeline.training_dataset(config, model, process_index=p, process_count=2), 2) for p in range(2)]
  for step in range(2):
    joined = np.concatenate([parts[0][step]["index"], parts[1][step]["index"]])
    np.testing.assert_array_equal(joined, single[step]["index"])
    np.testing.assert_array_equal(parts[1][step]["identity_t"]["image"], single[step]["identity_t"]["image"][2:])
  with pytest.raises(ValueError, match="not divisible"):
    pipeline.training_dataset(data_config(corpus[0], batch_size=3), model, process_index=0, process_count=2)


def test_refuses_another_model_and_too_small_datasets(corpus, model):
  with pytest.raises(ValueError, match="procedural-v1-low.*procedural-v1-medium"):
    pipeline.training_dataset(data_config(corpus[0]), face3d.procedural_model(detail="medium"))
  with pytest.raises(sampling.DatasetTooSmall, match=r"images.*no video has more than k=1"):
    pipeline.training_dataset(data_config(corpus[1]), model)
  with pytest.raises(sampling.DatasetTooSmall, match="videos.*image set; it has 0"):
    pipeline.training_dataset(data_config(corpus[0], sampling="video_image"), model)


def test_corpus_records_re_render_to_their_images(corpus, model):
  frames = records.open_dataset(corpus[0])
  index = records.video_index(frames)
  for video in (0, 3):
    rows = index[synthetic.video_name(0, video)]
    stored = [frames[int(i)] for i in rows]
    appearance = synthetic.sample_video(model, synthetic.video_seed(0, video), 1, SIZE).appearance
    rendered = synthetic.render_frames(model, appearance, stored[0]["id_coeffs"],
                                       np.stack([r["exp_coeffs"] for r in stored]),
                                       np.stack([r["camera"] for r in stored]), SIZE)
    decoded = np.stack([r["image"] for r in stored]).astype(float)
    assert np.abs(rendered - decoded).mean() < 2.0  # JPEG at quality 95
    assert [r["frame_index"] for r in stored] == list(range(6))


def read_all(path):
  frames = records.open_dataset(path)
  return {(r["video_id"], int(r["frame_index"])): r for r in (frames[i] for i in range(len(frames)))}


def test_corpus_is_deterministic(tmp_path, model):
  paths = [records.write_dataset(tmp_path / str(n), "videos", synthetic.corpus_examples(model, 2, 3, SIZE, seed=4), model, SIZE)
           for n in range(2)]
  first, second = (read_all(p) for p in paths)
  assert first.keys() == second.keys() and len(first) == 6
  for key, record in first.items():
    for field in records.FIELDS:
      np.testing.assert_array_equal(record[field], second[key][field])


@pytest.mark.slow
def test_synthetic_job_writes_videos_and_image_sets(tmp_path):
  import subprocess
  import sys
  repo = __import__("pathlib").Path(__file__).resolve().parents[1]
  common = [sys.executable, "-m", "data_prep.synthetic", f"--out={tmp_path}", "--size=32", "--detail=low"]
  done = subprocess.run(common + ["--videos=2", "--frames=3"], cwd=repo, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "wrote 6 frames of 2 videos at 32 px" in done.stdout
  done = subprocess.run(common + ["--images=3"], cwd=repo, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  images = records.open_dataset(tmp_path / "synthetic_images")
  assert len(images) == 3 and {len(v) for v in records.video_index(images).values()} == {1}
  again = subprocess.run(common + ["--videos=2", "--frames=3"], cwd=repo, capture_output=True, text=True, timeout=300)
  assert again.returncode != 0 and "already exists" in again.stderr


def test_held_out_tail_is_never_drawn_and_is_what_evaluation_reads(corpus, model):
  from tfvgan_jax.data import evaluation
  # Six frames per video, half held out: training draws frames 0-2 only, evaluation reads 3-5.
  batches = take(pipeline.training_dataset(data_config(corpus[0], batch_size=8, held_out_tail=0.5), model), 8)
  drawn = np.concatenate([batch[key]["frame_index"] for batch in batches for key in ROLE_KEYS])
  assert drawn.max() == 2 and drawn.min() == 0
  batch = evaluation.self_reenactment_batch(corpus[0], 2, 2, model, tail=0.5)
  assert batch["identity_t"]["frame_index"].tolist() == [3, 3, 3, 3]
  assert batch["appearance_t"]["frame_index"].tolist() == [4, 5, 4, 5]
  assert batch["appearance_prev"]["frame_index"].tolist() == [3, 4, 3, 4]
  with pytest.raises(records.DatasetError, match=r"held-out tails \(50% of each video\) of at least 4 frames"):
    evaluation.self_reenactment_batch(corpus[0], 2, 3, model, tail=0.5)
  # Too little left to train on is the sampler's error, naming the split.
  with pytest.raises(sampling.DatasetTooSmall, match=r"the first 20% of each video: data.held_out_tail=0.8"):
    pipeline.training_dataset(data_config(corpus[0], held_out_tail=0.8), model)
  with pytest.raises(ValueError, match=r"held_out_tail=1.5"):
    pipeline.training_dataset(data_config(corpus[0], held_out_tail=1.5), model)


def test_fewer_than_three_people_train_self_reenactment_only_and_say_so(tmp_path, model, caplog):
  two = records.write_dataset(tmp_path, "two", synthetic.corpus_examples(model, 2, 4, SIZE, seed=3), model, SIZE)
  with caplog.at_level("WARNING"):
    batches = take(pipeline.training_dataset(data_config(two, batch_size=8), model), 2)
  assert all((batch["branch"] == sampling.INTRA).all() for batch in batches)
  assert any("2 videos with more than 1 frames" in r.getMessage() and "swaps cannot be trained" in r.getMessage()
             and "data.sigma 0.5 -> 1" in r.getMessage() for r in caplog.records)
