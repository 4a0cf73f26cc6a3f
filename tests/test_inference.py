"""The inference layer: the one scene builder (which frame gives the expression, the hint, the
flow), the range conversions and the batch padding that training, editing and evaluation share."""

import jax
import numpy as np
import pytest

from tfvgan_jax import face3d, inference
from tfvgan_jax.data import sampling, synthetic

SIZE = 32


@pytest.fixture(scope="module")
def model():
  return face3d.load_model("procedural:low")


def frame(model, seed, t=0):
  truth = synthetic.sample_video(model, seed, 2, SIZE)
  image = synthetic.render_frames(model, truth.appearance, truth.id_coeffs, truth.exp_coeffs, truth.cameras, SIZE)
  return {"image": image[t], "id_coeffs": truth.id_coeffs, "exp_coeffs": truth.exp_coeffs[t],
          "camera": truth.cameras[t].astype(np.float32)}


def batch_of(model, branches):
  """Samples whose identity, appearance and expression frames come from three different videos."""
  rows = []
  for n, _ in enumerate(branches):
    rows.append({f"{role}_{time}": frame(model, 10 * n + r, t) for r, role in enumerate(sampling.ROLES)
                 for t, time in enumerate(sampling.TIMES)})
  batch = {key: {field: np.stack([row[key][field] for row in rows]) for field in rows[0][key]} for key in rows[0]}
  batch["branch"] = np.asarray(branches, np.int32)
  return batch


def test_expression_comes_from_the_third_video_on_inter_samples_when_asked(model):
  batch = batch_of(model, [sampling.INTRA, sampling.INTER])
  build = jax.jit(inference.build_scene, static_argnums=(2, 3))
  same = build(model, batch, 0.5, "appearance")
  third = build(model, batch, 0.5, "expression")
  unit = lambda image: image.astype(np.float32) / 127.5 - 1.0  # noqa: E731
  # Rows 2n, 2n + 1: sample n at t and t-1. Intra: X_e = X_p whatever the switch.
  for scene in (same, third):
    np.testing.assert_allclose(scene.expression[0], unit(batch["appearance_t"]["image"][0]), atol=1e-6)
    np.testing.assert_array_equal(scene.render[:2], same.render[:2])
  np.testing.assert_allclose(same.expression[2], unit(batch["appearance_t"]["image"][1]), atol=1e-6)
  np.testing.assert_allclose(third.expression[2], unit(batch["expression_t"]["image"][1]), atol=1e-6)
  np.testing.assert_allclose(third.expression[3], unit(batch["expression_prev"]["image"][1]), atol=1e-6)
  # The recombined face of the inter sample changed with its expression, its pose did not: the same
  # render as recombining X_e's expression by hand.
  assert not np.array_equal(third.render[2:], same.render[2:])
  by_hand = inference.render_frames(model, inference.FrameInputs(
      identity=batch["identity_t"]["image"][1:], id_coeffs=batch["identity_t"]["id_coeffs"][1:],
      identity_exp=batch["identity_t"]["exp_coeffs"][1:], identity_camera=batch["identity_t"]["camera"][1:],
      appearance=batch["appearance_t"]["image"][1:], exp_coeffs=batch["expression_t"]["exp_coeffs"][1:],
      camera=batch["appearance_t"]["camera"][1:], hint_from_identity=np.array([False])), 0.5)
  np.testing.assert_allclose(third.render[2], by_hand.render[0], atol=1e-5)
  # The hint: X_i outside the face for intra samples, X_p for inter samples.
  background = np.asarray(same.face_mask[..., 0] == 0)
  np.testing.assert_allclose(np.asarray(same.hint[0])[background[0]], np.asarray(same.identity[0])[background[0]])
  np.testing.assert_allclose(np.asarray(same.hint[2])[background[2]], np.asarray(same.appearance[2])[background[2]])
  assert same.flow.shape == (2, SIZE, SIZE, 2) and same.intra.tolist() == [True, False]
  with pytest.raises(ValueError, match="unknown expression source 'third'"):
    inference.build_scene(model, batch, 0.5, "third")


def test_to_uint8_rounds_to_nearest_and_clips():
  values = np.array([-0.2, 0.0, 0.5 / 255, 1.49 / 255, 1.51 / 255, 0.5, 1.0, 1.3])
  np.testing.assert_array_equal(inference.to_uint8(values), [0, 0, 0, 1, 2, 128, 255, 255])
  assert inference.to_uint8(values).dtype == np.uint8
  image = np.full((2, 2), 255, np.uint8)
  np.testing.assert_array_equal(inference.to_uint8(inference.to_model_range(image) * 0.5 + 0.5), image)


def test_pad_batch_repeats_the_last_sample():
  batch = {"a": np.arange(5), "b": (np.arange(10).reshape(5, 2),)}
  padded, size = inference.pad_batch(batch, 4)
  assert size == 5
  np.testing.assert_array_equal(padded["a"], [0, 1, 2, 3, 4, 4, 4, 4])
  np.testing.assert_array_equal(padded["b"][0][-1], [8, 9])
  same, size = inference.pad_batch(batch, 5)
  assert same is batch and size == 5


def test_image_grid_lays_out_the_columns_in_order():
  outputs = {name: np.full((3, 4, 4, 3), k / 10.0, np.float32) for k, name in enumerate(inference.GRID_COLUMNS)}
  grid = inference.image_grid(outputs, rows=2)
  assert grid.shape == (2 * 4, 8 * 4, 3) and grid.dtype == np.uint8
  for k in range(len(inference.GRID_COLUMNS)):
    assert (grid[:, 4 * k:4 * (k + 1)] == np.round(k / 10.0 * 255)).all()
