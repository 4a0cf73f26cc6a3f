"""Feature networks for the evaluation metrics, run from ONNX files the user provides (onnxruntime, CPU).

Two uses, both in `metrics`:

  inception = inception_network("pt_inception.onnx")        # FID
  fid = metrics.fid(inception(real_frames), inception(output_frames))

  arcface = face_recognition_network("w600k_r50.onnx")      # E_id
  e_id = metrics.identity_error(arcface(output_crops), arcface(identity_crops))

Nothing is downloaded: the files are exported or fetched by the user, whose task it is to check
their licences. Images enter as uint8 RGB [N, H, W, 3], the project's edge format; each model is
fed x = pixel * scale + offset, resized to its input size, in its layout.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import onnxruntime
from PIL import Image


class OnnxModel:
  """A single-input image network in an ONNX file, mapping uint8 images to flat feature vectors.

  Preprocessing, in order: each image is resized to `input_size` with PIL's bilinear filter (which
  averages over the footprint when shrinking) unless it already has that size; pixels become
  float32 x = pixel * scale + offset (scale 1/255, offset 0 gives [0, 1]; scale 1/127.5, offset -1
  gives [-1, 1], i.e. (pixel - 127.5) / 127.5); channels stay RGB; the batch is laid out NCHW or
  NHWC. The network's selected output is flattened per image to [N, D].
  """

  def __init__(
      self,
      path: str | os.PathLike,
      input_size: tuple[int, int] = (224, 224),
      layout: str = "NCHW",
      scale: float = 1.0 / 255.0,
      offset: float = 0.0,
      output: int = 0,
  ):
    """Opens the model on onnxruntime's CPU provider and checks its input against the settings.

    Args:
      path: the .onnx file.
      input_size: (H, W) the images are resized to.
      layout: 'NCHW' or 'NHWC', the order the model's input expects.
      scale, offset: the pixel normalisation x = pixel * scale + offset.
      output: index of the model output used as the features.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: the file is not a model onnxruntime can load, or its input is not one float
        image batch of rank 4 matching `layout` and `input_size`.
    """
    self.path = pathlib.Path(path)
    if layout not in ("NCHW", "NHWC"):
      raise ValueError(f"{self.path}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if not self.path.is_file():
      raise FileNotFoundError(f"{self.path}: no such ONNX model file")
    try:
      self.session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable files.
      raise ValueError(f"{self.path}: not a loadable ONNX model ({error})") from error
    self.input_size = tuple(int(v) for v in input_size)
    self.layout = layout
    self.scale = float(scale)
    self.offset = float(offset)
    inputs = self.session.get_inputs()
    if len(inputs) != 1:
      names = [i.name for i in inputs]
      raise ValueError(f"{self.path}: expected a model with one input, it has {len(inputs)}: {names}")
    self.input_name = inputs[0].name
    shape = inputs[0].shape
    if len(shape) != 4:
      raise ValueError(f"{self.path}: input {self.input_name!r} has rank {len(shape)} (shape {shape}); "
                       f"expected a rank-4 image batch in {layout}")
    if inputs[0].type != "tensor(float)":
      raise ValueError(f"{self.path}: input {self.input_name!r} is {inputs[0].type}; expected tensor(float)")
    height, width = self.input_size
    expected = [None, 3, height, width] if layout == "NCHW" else [None, height, width, 3]
    # Symbolic or unknown dimensions (strings, None) accept any size.
    if any(isinstance(got, int) and want is not None and got != want for got, want in zip(shape, expected)):
      raise ValueError(f"{self.path}: input {self.input_name!r} has shape {shape}, which does not fit "
                       f"input_size {self.input_size} in {layout} with 3 channels")
    outputs = self.session.get_outputs()
    if not 0 <= output < len(outputs):
      raise ValueError(f"{self.path}: output index {output} out of range; the model has {len(outputs)} outputs")
    self.output_name = outputs[output].name

  def preprocess(self, images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] RGB -> the model's float32 input, [N, 3, h, w] or [N, h, w, 3]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"{self.path}: expected uint8 [N, H, W, 3] RGB images, got {images.dtype} {images.shape}")
    height, width = self.input_size
    if images.shape[1:3] != (height, width):
      images = np.stack([np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
                         for image in images])
    x = images.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "NCHW" else x)

  def __call__(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Features of a set of images.

    Args:
      images: uint8 [N, H, W, 3] RGB, any H, W.
      batch_size: images per onnxruntime call.

    Returns:
      [N, D] float32, the selected output flattened per image.
    """
    images = np.asarray(images)
    features = [
        self.session.run([self.output_name], {self.input_name: self.preprocess(images[start:start + batch_size])})[0]
        for start in range(0, len(images), batch_size)]
    if not features:
      raise ValueError(f"{self.path}: no images given")
    return np.concatenate([f.reshape(f.shape[0], -1) for f in features]).astype(np.float32)


def inception_network(path: str | os.PathLike) -> OnnxModel:
  """The FID Inception network: RGB 299 x 299, NCHW, pixels / 255 in [0, 1], 2048 features.

  The standard FID network is pytorch-fid's InceptionV3 with the `pt_inception-2015-12-05` weights
  (TensorFlow's original FID graph ported to PyTorch). The user exports it to ONNX; nothing here
  downloads it. For example, in an environment with torch and pytorch-fid, export a module whose
  forward returns `InceptionV3([3])(x)[0]` (block 3: the 2048-d average-pool features, [N, 2048, 1,
  1]) with `torch.onnx.export` on a [1, 3, 299, 299] example input, with a dynamic batch axis.
  pytorch-fid's defaults (resize_input, normalize_input) make that network take RGB in [0, 1] and map
  it to [-1, 1] itself; images reach it already at 299 x 299 (PIL bilinear here), so its own resize
  does nothing. FID values depend on such details: compare numbers computed the same way.

  Args:
    path: the exported .onnx file.
  """
  return OnnxModel(path, input_size=(299, 299), layout="NCHW", scale=1.0 / 255.0, offset=0.0)


def face_recognition_network(path: str | os.PathLike) -> OnnxModel:
  """A face-recognition embedder such as InsightFace's ArcFace `w600k_r50.onnx`: RGB 112 x 112, NCHW,
  (pixel - 127.5) / 127.5, one 512-d embedding per face.

  The papers use CosFace [33]; any such embedder serves E_id, whose values then depend on it. The
  images should be face crops aligned the way the network was trained (for ArcFace, a similarity
  transform of the 5 MTCNN-style points onto its 112 x 112 template). The user provides the file
  and checks its licence (InsightFace releases its pretrained models for non-commercial research).

  Args:
    path: the .onnx file.
  """
  return OnnxModel(path, input_size=(112, 112), layout="NCHW", scale=1.0 / 127.5, offset=-1.0)
