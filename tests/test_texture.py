"""The render R (texture transfer, DESIGN.md choice 5), the mask M^ and the hint M."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfvgan_jax import face3d, render

import meshes

SIZE = 64


@pytest.fixture(scope="module")
def face_model():
  return face3d.procedural_model(detail="low")


def screen(model, cam, id_coeffs=None, exp_coeffs=None):
  a_id = np.zeros(model.num_id) if id_coeffs is None else id_coeffs
  a_exp = np.zeros(model.num_exp) if exp_coeffs is None else exp_coeffs
  return face3d.project(face3d.vertices(model, a_id, a_exp), cam)


def camera(yaw=0.0, pitch=0.0):
  return face3d.Camera.create(pitch=pitch, yaw=yaw, scale=0.38 * SIZE, translation=(SIZE / 2, SIZE / 2))


def smooth_image(seed=0):
  rng = np.random.default_rng(seed)
  cols, rows = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5)
  freqs = rng.uniform(0.05, 0.3, size=(3, 2))
  return np.stack([np.sin(cols * fx + rows * fy) for fx, fy in freqs], -1).astype(np.float32)


def test_identity_frame_as_target_reproduces_the_identity_image(face_model):
  image = smooth_image()
  verts = screen(face_model, camera(yaw=0.3))
  out = render.render_face(verts, verts, face_model.triangles, image, SIZE, SIZE)
  mask = np.asarray(out.face_mask)[..., 0] > 0
  valid = np.asarray(out.texture_valid)
  assert valid.sum() >= 0.99 * mask.sum() and mask.sum() > 0.2 * SIZE * SIZE
  np.testing.assert_allclose(np.asarray(out.render)[valid], image[valid], atol=1e-4)
  assert np.all(np.asarray(out.render)[~mask] == 0)


@pytest.mark.parametrize("angle", [0.05, 0.3])
def test_a_finely_meshed_surface_seen_turned_has_texture_at_every_pixel(angle):
  """A convex dome of sub-pixel triangles (28,800 on 64 px) turned about the vertical axis and
  shifted by a fraction of a pixel hides nothing of itself, so every pixel it covers has texture.
  Read from the one pixel that contains each point, the z-buffer left specks without (11-15
  pixels here; 1% of the face on real clips): that pixel's triangle is a few triangles away and
  its plane, extrapolated, misses the curved surface by more than the tolerance."""
  verts, tris = meshes.dome(121, SIZE)
  centre = np.array([SIZE / 2, SIZE / 2, 0.0])
  p = verts - centre
  turned = np.stack([np.cos(angle) * p[:, 0] + np.sin(angle) * p[:, 2], p[:, 1],
                     -np.sin(angle) * p[:, 0] + np.cos(angle) * p[:, 2]], -1) + centre + np.array([0.37, -0.21, 0.0])
  verts, turned, tris = jnp.asarray(verts), jnp.asarray(turned, jnp.float32), jnp.asarray(tris)
  out = render.render_face(turned, verts, tris, np.ones((SIZE, SIZE, 3), np.float32), SIZE, SIZE)
  mask = np.asarray(out.face_mask)[..., 0] > 0
  assert mask.sum() > 0.6 * SIZE * SIZE
  np.testing.assert_array_equal(np.asarray(out.texture_valid), mask)
  # The one-pixel read, for contrast: the test sees the specks it is about.
  points = render.surface_points(out.fragments, verts, tris)
  identity = render.rasterize(verts, tris, SIZE, SIZE)
  depth = np.asarray(render.depth_at(identity, verts, tris, points[..., :2]))
  one_pixel = mask & np.isfinite(depth) & (np.asarray(points)[..., 2] >= depth - 0.5)
  assert (mask & ~one_pixel).sum() >= 5


def test_points_hidden_in_the_identity_frame_have_no_texture(face_model):
  image = smooth_image()
  identity = screen(face_model, camera(yaw=1.1))  # model +x (the subject's left) turns away
  target = screen(face_model, camera(yaw=-0.4))
  out = render.render_face(target, identity, face_model.triangles, image, SIZE, SIZE)
  mask = np.asarray(out.face_mask)[..., 0] > 0
  valid = np.asarray(out.texture_valid)
  hidden = mask & ~valid
  assert hidden.sum() > 0.05 * mask.sum()
  # Hidden pixels lie on the subject's left, which the target camera (yaw -0.4) shows on screen right.
  cols = np.nonzero(hidden)[1]
  assert np.median(cols) > SIZE / 2


def test_recombined_expression_is_textured_from_the_identity(face_model):
  """Jaw open moves the lower face only: where the target's triangle did not move, R is X_i itself,
  and where it moved, R is X_i read at the moved surface point, not at the target pixel."""
  image = smooth_image(1)
  identity = screen(face_model, camera())
  exp = np.zeros(face_model.num_exp)
  exp[0] = 2.5  # jaw open
  target = screen(face_model, camera(), exp_coeffs=exp)
  out = render.render_face(target, identity, face_model.triangles, image, SIZE, SIZE)
  valid = np.asarray(out.texture_valid)
  tri_id = np.asarray(out.fragments.triangle_id)
  moved = np.abs(np.asarray(target) - np.asarray(identity)).max(-1) > 1e-3  # per vertex
  tri_moved = moved[np.asarray(face_model.triangles)].any(-1)[np.maximum(tri_id, 0)]
  still = valid & ~tri_moved
  shifted = valid & tri_moved
  assert still.sum() > 200 and shifted.sum() > 20
  np.testing.assert_allclose(np.asarray(out.render)[still], image[still], atol=1e-4)
  assert np.abs(np.asarray(out.render)[shifted] - image[shifted]).max() > 0.05


def test_mask_and_appearance_hint(face_model):
  image = smooth_image()
  verts = screen(face_model, camera())
  frags = render.rasterize(verts, face_model.triangles, SIZE, SIZE)
  mask = render.face_mask(frags)
  assert mask.shape == (SIZE, SIZE, 1) and set(np.unique(np.asarray(mask))) == {0.0, 1.0}
  hint = np.asarray(render.appearance_hint(image, mask))
  inside = np.asarray(mask)[..., 0] > 0
  assert np.all(hint[inside] == 0)
  np.testing.assert_array_equal(hint[~inside], image[~inside])


@pytest.mark.slow
def test_gradients_reach_identity_image_and_vertices(face_model):
  image = jnp.asarray(smooth_image())
  identity = screen(face_model, camera(yaw=0.2))
  target = screen(face_model, camera(yaw=-0.2))

  def loss(target_v, identity_v, img):
    out = render.render_face(target_v, identity_v, face_model.triangles, img, SIZE, SIZE)
    return jnp.mean((out.render - 0.3) ** 2)

  grads = jax.grad(loss, argnums=(0, 1, 2))(target, identity, image)
  for g in grads:
    g = np.asarray(g)
    assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0


def test_render_face_under_jit_and_vmap(face_model):
  image = jnp.asarray(np.stack([smooth_image(0), smooth_image(1)]))
  verts = jnp.stack([screen(face_model, camera(yaw=0.2)), screen(face_model, camera(yaw=-0.3))])
  fn = jax.jit(jax.vmap(lambda v, img: render.render_face(v, v, face_model.triangles, img, SIZE, SIZE)))
  out = fn(verts, image)
  assert out.render.shape == (2, SIZE, SIZE, 3) and out.face_mask.shape == (2, SIZE, SIZE, 1)
  assert not np.asarray(out.fragments.overflow).any()
  single = render.render_face(verts[1], verts[1], face_model.triangles, image[1], SIZE, SIZE)
  np.testing.assert_allclose(np.asarray(out.render[1]), np.asarray(single.render), atol=1e-5)
