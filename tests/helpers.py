"""Helpers the test modules share (imported as `helpers`; fixtures live in conftest.py)."""

import pathlib

import numpy as np
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The shared real pictures with one face each.
TESTDATA_IMAGES = ("d8.jpg", "d12.jpg", "d19.jpg")


def load_config(name="synthetic", arg="tiny", **overrides):
  """configs/NAME.py's get_config(arg), with `overrides` {'a.b': value} applied."""
  import importlib

  module = importlib.import_module(f"configs.{name}")
  config = module.get_config(arg)
  for path, value in overrides.items():
    node = config
    *parents, leaf = path.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def rotation_numpy(pose):
  """Rz(roll) @ Ry(yaw) @ Rx(pitch) from the elementary rotations, float64."""
  p, y, r = pose
  rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
  ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
  rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
  return rz @ ry @ rx


def read_rgb(path) -> np.ndarray:
  return np.asarray(Image.open(path).convert("RGB"))


def save_onnx_model(path, nodes, input_shape, output_shape, initializers=()):
  """Writes a one-input, one-output float32 graph to `path` and returns the path."""
  onnx = pytest.importorskip("onnx")
  from onnx import TensorProto, helper, numpy_helper
  graph = helper.make_graph(
      nodes, "tiny",
      [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)],
      [helper.make_tensor_value_info("features", TensorProto.FLOAT, output_shape)],
      initializer=[numpy_helper.from_array(np.asarray(value), name) for name, value in initializers])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
  model.ir_version = 8
  onnx.checker.check_model(model)
  onnx.save(model, str(path))
  return path


def raw_records(dataset):
  """{(video_id, frame_index): {field: value}} of every record of a frame dataset, JPEG bytes as
  stored and arrays as bytes: two datasets with the same records compare equal in any order."""
  import tensorflow_datasets as tfds
  from tfvgan_jax.data import records
  out = {}
  for i in range(len(dataset)):
    example = records._parse(dataset.info.features, dataset.read_raw(i), str(i),
                             decoders={"image": tfds.decode.SkipDecoding()})
    key = (example["video_id"], int(example["frame_index"]))
    out[key] = {k: (v.tobytes() if isinstance(v, np.ndarray) else v) for k, v in example.items()}
  return out
