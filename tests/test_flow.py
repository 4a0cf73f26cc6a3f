"""render.dense_flow (eq. 9-14 / 11-16) and render.warp (DESIGN.md choice 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meshes import dome, grid_mesh, merge
from tfvgan_jax import face3d, render

SIZE = 64


def flow_between(screen_t, screen_prev, tris, size=SIZE):
  frags_t = render.rasterize(screen_t, tris, size, size)
  frags_prev = render.rasterize(screen_prev, tris, size, size)
  flow, valid = render.dense_flow(jnp.asarray(screen_t), jnp.asarray(screen_prev), jnp.asarray(tris), frags_t, frags_prev)
  return np.asarray(flow), np.asarray(valid), frags_t


def test_zero_motion_gives_zero_flow():
  verts, tris = dome(12, SIZE)
  flow, valid, frags = flow_between(verts, verts, tris)
  assert np.all(flow == 0)
  np.testing.assert_array_equal(valid, np.asarray(frags.mask))


def test_translation_gives_the_opposite_flow():
  verts, tris = dome(12, SIZE)
  shift = np.array([3.25, -1.5, 0.0], np.float32)
  flow, valid, frags = flow_between(verts + shift, verts, tris)
  assert valid.sum() > 0.9 * np.asarray(frags.mask).sum()
  np.testing.assert_allclose(flow[valid], np.broadcast_to([-3.25, 1.5], flow[valid].shape), atol=1e-4)
  assert np.all(flow[~valid] == 0)


def test_small_rotation_matches_analytic_displacement():
  """Each pixel's surface point, rotated back to t-1 analytically, is where the flow points."""
  rows = 15
  u, v = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, rows))
  model_pts = np.stack([u, v, np.sqrt(np.clip(1.6 - u ** 2 - v ** 2, 0, None))], -1).reshape(-1, 3).astype(np.float32)
  _, tris = grid_mesh(rows, rows, (0, 1), (0, 1))
  cam_t = face3d.Camera.create(pitch=0.05, yaw=0.12, scale=22.0, translation=(32.0, 32.0))
  cam_prev = face3d.Camera.create(pitch=0.02, yaw=0.08, roll=0.03, scale=22.0, translation=(32.0, 32.0))
  screen_t = np.asarray(face3d.project(model_pts, cam_t))
  screen_prev = np.asarray(face3d.project(model_pts, cam_prev))
  flow, valid, frags = flow_between(screen_t, screen_prev, tris)
  assert valid.sum() > 0.8 * np.asarray(frags.mask).sum()
  # Analytic: the model-space point under each pixel, projected with the t-1 camera.
  tri_id = np.asarray(frags.triangle_id)
  bary = np.asarray(frags.barycentric)
  points = np.einsum("hwk,hwkc->hwc", bary, model_pts[tris[np.maximum(tri_id, 0)]])
  at_prev = np.asarray(face3d.project(points.reshape(-1, 3), cam_prev)).reshape(SIZE, SIZE, 3)
  cols, rows_ = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5)
  expected = at_prev[..., :2] - np.stack([cols, rows_], -1)
  np.testing.assert_allclose(flow[valid], expected[valid], atol=2e-3)
  assert np.abs(expected[valid]).max() > 1.0, "the motion is not trivially small"


def test_points_occluded_at_prev_are_invalid():
  """A plane with an occluder that covers a patch at t-1 and moves away at t: that patch is invalid."""
  plane = grid_mesh(9, 9, (0, SIZE), (0, SIZE), z=0.0)
  occluder = grid_mesh(3, 3, (8, 24), (8, 24), z=10.0)
  verts_prev, tris = merge(plane, occluder)
  verts_t = verts_prev.copy()
  verts_t[len(plane[0]):, 0] += 30.0  # only the occluder moves, to x in [38, 54]
  flow, valid, frags = flow_between(verts_t, verts_prev, tris)
  tri_id = np.asarray(frags.triangle_id)
  on_plane = (tri_id >= 0) & (tri_id < len(plane[1]))
  # Plane pixels at t that the occluder hid at t-1 (x, y in [8, 24]) cannot be traced back.
  assert not valid[10:22, 10:22].any() and on_plane[10:22, 10:22].all()
  # Plane pixels hidden at t (under the moved occluder) are not plane pixels at t at all, and the
  # occluder's own pixels are visible at both times.
  assert valid[10:22, 40:52].all()
  np.testing.assert_allclose(flow[10:22, 40:52], np.broadcast_to([-30.0, 0.0], (12, 12, 2)), atol=1e-4)
  # The rest of the plane did not move.
  assert valid[40:60, 2:30].all() and np.all(flow[40:60, 2:30] == 0)


def smooth_image(x, y):
  return np.stack([np.sin(x / 7.0) + np.cos(y / 5.0), np.sin((x + y) / 9.0), np.cos(x / 11.0) * np.sin(y / 6.0)], -1)


def test_warp_of_translated_image_recovers_the_original():
  verts, tris = dome(12, SIZE)
  d = np.array([2.6, -1.3], np.float32)
  flow, valid, _ = flow_between(verts + np.array([*d, 0], np.float32), verts, tris)
  cols, rows = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5)
  image_prev = smooth_image(cols, rows).astype(np.float32)
  image_t = smooth_image(cols - d[0], rows - d[1])  # frame t: content moved by d
  warped = np.asarray(render.warp(jnp.asarray(image_prev), jnp.asarray(flow)))
  interior = valid.copy()
  interior[:, -4:] = False  # samples past the border clamp
  np.testing.assert_allclose(warped[interior], image_t[interior], atol=0.02)


def test_warp_is_exact_for_integer_flow_and_batches():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 8, 9, 3)).astype(np.float32)
  flow = np.zeros((2, 8, 9, 2), np.float32)
  flow[..., 0] = 1.0  # read one pixel to the right
  out = np.asarray(render.warp(images, flow))
  np.testing.assert_allclose(out[:, :, :-1], images[:, :, 1:], atol=1e-6)


@pytest.mark.slow
def test_flow_and_warp_are_differentiable():
  verts, tris = dome(8, 32)
  image = jnp.asarray(smooth_image(*np.meshgrid(np.arange(32) + 0.5, np.arange(32) + 0.5)).astype(np.float32))

  def loss(v_t, img):
    frags_t = render.rasterize(v_t, tris, 32, 32)
    frags_prev = render.rasterize(jnp.asarray(verts), tris, 32, 32)
    flow, valid = render.dense_flow(v_t, jnp.asarray(verts), jnp.asarray(tris), frags_t, frags_prev)
    return jnp.sum(jnp.where(valid[..., None], render.warp(img, flow), 0.0) ** 2)

  g_v, g_img = jax.grad(loss, argnums=(0, 1))(jnp.asarray(verts) + jnp.array([1.3, 0.4, 0.0]), image)
  assert np.all(np.isfinite(np.asarray(g_v))) and np.abs(np.asarray(g_v)).sum() > 0
  assert np.all(np.isfinite(np.asarray(g_img))) and np.abs(np.asarray(g_img)).sum() > 0
