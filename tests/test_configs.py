"""The config files: one strict variant parser for all of them."""

import pytest

from configs import common
from helpers import load_config


def test_variants_parse_strictly():
  known = {"tiny": bool, "res": int, "rate": float, "name": str}
  assert common.parse_variant("", known) == {}
  assert common.parse_variant("tiny,res=128", known) == {"tiny": True, "res": 128}
  assert common.parse_variant("tiny=False", known) == {"tiny": False}
  assert common.parse_variant("tiny=0, rate=1e-3,name=x", known) == {"tiny": False, "rate": 1e-3, "name": "x"}
  with pytest.raises(ValueError, match=r"unknown config variant 'tiy' in 'tiy'; known: name, rate, res, tiny"):
    common.parse_variant("tiy", known)
  with pytest.raises(ValueError, match="expected a boolean"):
    common.parse_variant("tiny=maybe", known)
  with pytest.raises(ValueError, match="expected an integer"):
    common.parse_variant("res=12.5", known)
  with pytest.raises(ValueError, match="expected a number"):
    common.parse_variant("res=big", known)
  with pytest.raises(ValueError, match="needs a value"):
    common.parse_variant("res", known)
  with pytest.raises(ValueError, match="given twice"):
    common.parse_variant("res=1,res=2", known)


def test_fields_are_set_and_read_by_dotted_path_at_any_depth():
  from configs import common, synthetic
  config = synthetic.get_config()
  common.set_field(config, "loss.weights.app", 0.0)
  common.set_field(config, "model.gen_output", "residual")
  assert config.loss.weights["app"] == 0.0 and config.model.gen_output == "residual"
  assert common.get_field(config, "loss.weights.app") == 0.0 and common.get_field(config, "seed") == config.seed
  for path in ("loss.weights.nothing", "nothing.at.all", "seed.deeper", "model.nothing"):
    with pytest.raises(KeyError, match=f"no field '{path}'"):
      common.set_field(config, path, 1)
    with pytest.raises(KeyError, match=f"no field '{path}'"):
      common.get_field(config, path)


def test_every_config_rejects_unknown_variants_and_reads_booleans():
  """Before: `:tiy` ran the full config, and `:tiny=False` still applied the tiny settings."""
  for name in ("synthetic", "voxceleb", "ffhq_voxceleb", "clips"):
    with pytest.raises(ValueError, match="unknown config variant 'tiy'"):
      load_config(name, "tiy")
  assert load_config("synthetic", "tiny=False").model.image_size == 64
  assert load_config("synthetic", "tiny").model.image_size == 32
  assert load_config("synthetic", "res=128").model.image_size == 128
  assert load_config("voxceleb", "runlocal").model.image_size == 64
  with pytest.raises(ValueError, match="unknown config variant 'runlocal'.*known: res, tiny"):
    load_config("synthetic", "runlocal")


def test_every_config_sets_every_field_the_code_reads():
  paper = load_config("voxceleb", None).to_dict()
  for name in ("synthetic", "ffhq_voxceleb", "clips"):
    config = load_config(name, None).to_dict()
    missing = {f"{section}.{key}" for section, fields in paper.items() if isinstance(fields, dict)
               for key in fields if key not in config[section]}
    assert not missing, f"{name} lacks {missing}"


def test_the_command_line_names_a_bad_variant_in_one_line(tmp_path):
  import subprocess
  import sys
  run = subprocess.run([sys.executable, "-m", "tfvgan_jax.main", "--config=configs/synthetic.py:tiy",
                        f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=120,
                       cwd=__import__("helpers").ROOT)
  assert run.returncode == 2 and "Traceback" not in run.stderr
  assert run.stderr.strip().splitlines() == [
      "error: --config=configs/synthetic.py:tiy: ValueError: unknown config variant 'tiy' in 'tiy'; known: res, tiny "
      "(--helpshort lists the flags)"]
  assert not any(tmp_path.iterdir())


def test_the_clips_config_fine_tunes_the_demo_networks_on_held_out_tails():
  clips, demo = load_config("clips", None), load_config("synthetic", "res=128")
  assert clips.model.to_dict() == demo.model.to_dict()  # a demo run of that size can start it
  assert clips.face_model == demo.face_model
  assert (clips.data.videos, clips.eval.videos, clips.data.held_out_tail) == ("", "", 0.2)
  assert "synthetic" not in clips.data  # records from data_prep.build, required
  assert clips.data.inter_expression == "expression"  # UniFaceGAN eq. 2
  cpu = load_config("clips", "cpu")
  assert (cpu.model.image_size, cpu.data.batch_size, cpu.train.num_steps) == (128, 8, 1200)
  assert load_config("clips", "res=64").model.image_size == 64
