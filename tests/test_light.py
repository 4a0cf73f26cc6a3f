"""Shading of the textured face (`render.light`) and R re-shaded to the target's light
(`inference.reshade_render`, `config.render.relight`)."""

import jax.numpy as jnp
import numpy as np
import pytest

from tfvgan_jax import face3d, inference, render
from tfvgan_jax.data import synthetic

SIZE = 64


def sphere_points(count: int) -> np.ndarray:
  """[count, 3] unit vectors spread evenly over the sphere (a Fibonacci lattice)."""
  k = np.arange(count) + 0.5
  z = 1 - 2 * k / count
  phi = np.pi * (1 + 5 ** 0.5) * k
  r = np.sqrt(1 - z * z)
  return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1).astype(np.float32)


def test_sh_basis_is_orthonormal_over_the_sphere():
  n = sphere_points(20000)
  basis = np.asarray(render.sh_basis(jnp.asarray(n)), np.float64)
  gram = 4 * np.pi * basis.T @ basis / len(n)
  np.testing.assert_allclose(gram, np.eye(render.SH_TERMS), atol=2e-3)


def test_a_band_limited_light_is_recovered_and_a_lambertian_one_closely():
  n = sphere_points(4000)
  front = n[n[:, 2] > -0.2]  # what a face shows: normals toward the camera, a little beyond the profile
  true = np.array([0.9, 0.1, 0.3, -0.2, 0.05, -0.04, 0.08, 0.02, -0.06], np.float32)
  values = np.asarray(render.sh_basis(jnp.asarray(front))) @ true
  fitted = render.fit_sh_light(jnp.asarray(front), jnp.asarray(values), jnp.ones(len(front)), ridge=0.0)
  np.testing.assert_allclose(fitted, true, atol=2e-3)
  # Lambert's law with an ambient term, as the synthetic corpus shades: the fit's shading leaves
  # a seventh of its spread over the normals it saw (the clamp at 0 is not band-limited; the
  # default ridge costs a little of the fit).
  light = np.array([0.5, 0.4, 0.77], np.float32)
  light /= np.linalg.norm(light)
  lambert = 0.3 + 0.7 * np.maximum(front @ light, 0.0)
  fitted = render.fit_sh_light(jnp.asarray(front), jnp.asarray(lambert), jnp.ones(len(front)))
  error = np.asarray(render.shading(fitted, jnp.asarray(front))) - lambert
  assert np.sqrt(np.mean(error ** 2)) < np.std(lambert) / 7
  # Weights: pixels with weight 0 say nothing; no weight at all gives no light.
  corrupted = np.where(np.arange(len(front)) % 3 == 0, 5.0, values).astype(np.float32)
  weight = (np.arange(len(front)) % 3 != 0).astype(np.float32)
  np.testing.assert_allclose(render.fit_sh_light(jnp.asarray(front), jnp.asarray(corrupted), jnp.asarray(weight),
                                                 ridge=0.0), true, atol=2e-3)
  assert np.all(np.asarray(render.fit_sh_light(jnp.asarray(front), jnp.asarray(values), jnp.zeros(len(front)))) == 0)


def test_shading_ratio_by_hand():
  c0, c1 = 0.282095, 0.488603
  uniform = jnp.zeros(9).at[0].set(1.0)
  from_front = jnp.zeros(9).at[0].set(1.0).at[2].set(0.5)   # DC plus a light along +z (toward the camera)
  normals = jnp.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])    # one texel facing the camera, one sideways
  both = jnp.ones(2)
  # uniform -> from the front: shadings c0, c0 and c0 + c1 / 2, c0, each over its mean.
  mean = c0 + 0.25 * c1
  np.testing.assert_allclose(render.shading_ratio(uniform, normals, from_front, normals, both),
                             [(c0 + 0.5 * c1) / mean, c0 / mean], rtol=1e-5)
  # The means keep the texture's mean brightness: the ratio averages to 1 over the texels.
  np.testing.assert_allclose(np.mean(render.shading_ratio(uniform, normals, from_front, normals, both)), 1.0,
                             rtol=1e-5)
  # Only the weighted texels set the means.
  np.testing.assert_allclose(render.shading_ratio(uniform, normals, from_front, normals, jnp.array([1.0, 0.0])),
                             [1.0, c0 / (c0 + 0.5 * c1)], rtol=1e-5)
  # The same light at the same normals is 1, and so is a brighter copy of it.
  np.testing.assert_allclose(render.shading_ratio(from_front, normals, 3.0 * from_front, normals, both), 1.0,
                             rtol=1e-5)
  # Beyond the limits it is clipped: lit strongly from the front -> uniform, the sideways texel
  # would be brightened (c0 + c1) / c0 = 2.73 times.
  strong = jnp.zeros(9).at[0].set(1.0).at[2].set(2.0)
  np.testing.assert_allclose(render.shading_ratio(strong, normals, uniform, normals, both, limits=(0.5, 2.0)),
                             [(c0 + c1) / (c0 + 2 * c1), 2.0], rtol=1e-5)
  # Without a fitted light (or with a shading whose mean is not positive) it is 1.
  assert np.all(np.asarray(render.shading_ratio(jnp.zeros(9), normals, from_front, normals, both)) == 1.0)


def test_screen_normals_are_the_model_normals_turned_and_face_the_camera():
  model = face3d.procedural_model(detail="low")
  cam = face3d.Camera.create(pitch=0.1, yaw=0.4, roll=0.05, scale=0.38 * SIZE, translation=(SIZE / 2, SIZE / 2))
  vertices = face3d.vertices(model, np.zeros(model.num_id), np.zeros(model.num_exp))
  screen = face3d.project(vertices, cam)
  normals = np.asarray(render.vertex_normals(screen, model.triangles))
  # Independently: the model-space normals (synthetic corpus), rotated by the camera and y-flipped.
  model_normals = np.asarray(synthetic.vertex_normals(vertices, model.triangles))
  expected = (np.asarray(face3d.euler_to_matrix(cam.pose)) @ model_normals.T).T * np.array([1.0, -1.0, 1.0])
  used = np.linalg.norm(model_normals, axis=-1) > 0
  np.testing.assert_allclose(normals[used], expected[used], atol=1e-4)
  frontal = np.asarray(render.vertex_normals(face3d.project(vertices, cam.replace(pose=jnp.zeros(3))),
                                             model.triangles))
  assert np.mean(frontal[used, 2] > 0) > 0.8  # most of a frontal face looks at the camera


def _video_frames(model, seed, light, ambient, cameras, exp=None):
  rng = np.random.default_rng(seed)
  appearance = synthetic.random_appearance(rng, SIZE)._replace(light=np.asarray(light, np.float32), ambient=ambient)
  id_coeffs = np.zeros(model.num_id, np.float32)
  exp = np.zeros((len(cameras), model.num_exp), np.float32) if exp is None else exp
  frames, coverage = synthetic.render_frames_with_coverage(model, appearance, id_coeffs, exp, cameras, SIZE)
  return frames, coverage, id_coeffs, exp


@pytest.fixture(scope="module")
def lit_frames():
  """One face, frontal in X_i under a light from the left, turned in X_p under a light from the right,
  both over the same background, and the truth: X_p's face turned, lit from the right."""
  model = face3d.procedural_model(detail="medium")
  cams = np.stack([np.asarray(face3d.Camera.create(yaw=yaw, scale=0.38 * SIZE, translation=(SIZE / 2, SIZE / 2))
                              .to_vector()) for yaw in (0.0, 0.35)]).astype(np.float32)
  left = np.array([-0.7, 0.2, 0.68]) / np.linalg.norm([-0.7, 0.2, 0.68])
  right = np.array([0.7, 0.2, 0.68]) / np.linalg.norm([0.7, 0.2, 0.68])
  identity, _, id_coeffs, exp = _video_frames(model, 1, left, 0.25, cams[:1])
  target, coverage, _, _ = _video_frames(model, 1, right, 0.25, cams[1:])
  return model, cams, identity[0], target[0], coverage[0], id_coeffs, exp[0]


def _frames(model, cams, identity, appearance, id_coeffs, exp, hint_from_identity):
  return inference.FrameInputs(
      identity=jnp.asarray(identity[None]), id_coeffs=jnp.asarray(id_coeffs[None]),
      identity_exp=jnp.asarray(exp[None]), identity_camera=jnp.asarray(cams[:1]),
      appearance=jnp.asarray(appearance[None]), exp_coeffs=jnp.asarray(exp[None]), camera=jnp.asarray(cams[1:]),
      hint_from_identity=jnp.asarray([hint_from_identity]), appearance_id=jnp.asarray(id_coeffs[None]),
      appearance_exp=jnp.asarray(exp[None]))


def test_reshaded_render_takes_the_target_frames_light(lit_frames):
  model, cams, identity, target, coverage, id_coeffs, exp = lit_frames
  frames = _frames(model, cams, identity, target, id_coeffs, exp, hint_from_identity=False)
  plain = inference.render_frames(model, frames, 0.5)
  reshaded = inference.render_frames(model, frames, 0.5, relight=True)
  truth = target.astype(np.float32) / 127.5 - 1
  valid = (np.asarray(plain.render[0]).any(-1)) & (coverage > 0.99)
  error = lambda image: np.sqrt(np.mean((np.asarray(image[0])[valid] - truth[valid]) ** 2))  # noqa: E731
  assert valid.sum() > 500
  assert error(reshaded.render) < 0.6 * error(plain.render), (error(reshaded.render), error(plain.render))
  # Only R changes: the mask, the hint and the mesh are those of the plain render.
  np.testing.assert_array_equal(reshaded.face_mask, plain.face_mask)
  np.testing.assert_array_equal(reshaded.hint, plain.hint)
  assert np.all(np.asarray(reshaded.render)[~np.asarray(plain.render).any(-1)] == 0)


def test_reshading_toward_the_texture_frames_own_light_at_its_own_pose_changes_nothing(lit_frames):
  model, cams, identity, _, _, id_coeffs, exp = lit_frames
  same = inference.FrameInputs(*_frames(model, cams, identity, identity, id_coeffs, exp, True)[:6],
                               camera=jnp.asarray(cams[:1]), hint_from_identity=jnp.asarray([True]),
                               appearance_id=jnp.asarray(id_coeffs[None]), appearance_exp=jnp.asarray(exp[None]))
  plain = inference.render_frames(model, same, 0.5)
  reshaded = inference.render_frames(model, same, 0.5, relight=True)
  np.testing.assert_allclose(reshaded.render, plain.render, atol=1e-5)


def test_reshading_needs_the_appearance_frames_own_coefficients(lit_frames):
  model, cams, identity, target, _, id_coeffs, exp = lit_frames
  frames = _frames(model, cams, identity, target, id_coeffs, exp, False)._replace(appearance_id=None)
  inference.render_frames(model, frames, 0.5)  # the papers' R does not read them
  with pytest.raises(ValueError, match="X_p's own identity and expression"):
    inference.render_frames(model, frames, 0.5, relight=True)
