"""From a folder of real clips to a fine-tuned run (`configs/clips.py`): records built with
`data_prep.build`, a run started from another run's networks (`config.init_from`), trained on the
first 80% of every clip and evaluated on the held-out rest."""

import json
import logging
import os

import pytest

from data_prep import build
from helpers import load_config
from tfvgan_jax import evaluate, train
from tfvgan_jax.data import evaluation, records

pytestmark = pytest.mark.slow  # decodes, tracks and fits real clips, then trains


def test_from_a_folder_of_clips_to_a_fine_tuned_run_evaluated_on_held_out_tails(tmp_path, testdata, mediapipe_models,
                                                                                 tiny_run, caplog):
  demo_config, demo = tiny_run
  folder = tmp_path / "clips"
  folder.mkdir()
  for name in ("d10", "d12", "d19"):  # three people: swaps can be drawn
    os.symlink(testdata / "videos" / f"{name}.mp4", folder / f"{name}.mp4")
  size = demo_config.model.image_size
  assert build.main([f"--input={folder}/*.mp4", f"--out={tmp_path / 'records'}", f"--face_model={demo_config.face_model}",
                     f"--size={size}", "--max_frames=20", f"--detector={mediapipe_models.detector}",
                     f"--landmarks={mediapipe_models.landmarks}"]) == 0
  videos = str(tmp_path / "records" / "videos")
  assert {name: len(order) for name, order in records.video_index(records.open_dataset(videos)).items()} == {
      "d10": 20, "d12": 20, "d19": 20}

  config = load_config("clips", "cpu", **{"data.videos": videos, "init_from": str(demo), "data.batch_size": 4,
                                          "train.num_steps": 2, "train.checkpoint_every": 2, "train.eval_every": 2,
                                          "eval.num_frames": 2, "eval.grid_rows": 3})
  config.model = demo_config.model.copy_and_resolve_references()  # the tiny networks of the demo run
  config.face_model = demo_config.face_model
  with caplog.at_level(logging.INFO):
    state = train.train_and_evaluate(config, tmp_path / "run")
  assert int(state.step) == 2
  assert any("initialized embedder, generator, discriminator from" in r.getMessage() for r in caplog.records)
  assert (tmp_path / "run" / "grid.png").is_file()  # evaluated: on the tails, every clip

  # The evaluation reads only the last 4 of each clip's 20 frames, the ones never drawn.
  batch = evaluation.self_reenactment_batch(videos, 0, 2, tail=config.data.held_out_tail)
  assert batch["identity_t"]["frame_index"].min() >= 16 and len(batch["index"]) == 3 * 2
  result = evaluate.evaluate_checkpoint(tmp_path / "run", videos, num_videos=0, num_frames=2,
                                        landmarks_model=mediapipe_models.landmarks, pairs_of_videos="all")
  details = result.document["details"]
  assert details["held_out_tail"] == 0.2 and details["num_videos"] == 3
  assert len(details["rows"][evaluate.SWAPPING]["pairs"]) == 6 and ["d10", "d12"] in details["rows"][evaluate.SWAPPING]["pairs"]
  assert details["rows"][evaluate.SWAPPING]["samples"] == 6 * 2
  assert 0.0 < result.rows[evaluate.REENACTMENT]["ssim"] < 1.0
  with pytest.raises(evaluate.EvaluationError, match=r"held-out tails \(20% of each video\) of at least 6 frames"):
    evaluate.evaluate_checkpoint(tmp_path / "run", videos, num_videos=3, num_frames=5)
  assert json.loads((tmp_path / "records" / build.SUMMARY_FILE).read_text())["written"] == 3
