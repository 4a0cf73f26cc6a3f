"""render.rasterize against the brute-force NumPy reference, and its buffer/overflow contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brute_force import rasterize_reference
from meshes import dome, grid_mesh, merge
from tfvgan_jax import face3d, render


def assert_matches_reference(verts, tris, height, width, min_agreement=0.999, **kwargs):
  frags = render.rasterize(verts, tris, height, width, **kwargs)
  ref_id, ref_bary, ref_depth = rasterize_reference(verts, tris, height, width)
  tri_id = np.asarray(frags.triangle_id)
  assert not bool(frags.overflow)
  agree = tri_id == ref_id
  assert agree.mean() >= min_agreement, f"ids agree on {agree.mean():.5f} of pixels"
  # Coverage is exact up to edge ties: disagreements are between two triangles, never a hole.
  assert np.all((tri_id >= 0) == (ref_id >= 0) | ~agree)
  both = agree & (ref_id >= 0)
  np.testing.assert_allclose(np.asarray(frags.barycentric)[both], ref_bary[both], atol=1e-4)
  depth_scale = max(1.0, np.abs(verts[:, 2]).max())
  np.testing.assert_allclose(np.asarray(frags.depth)[both], ref_depth[both], atol=1e-5 * depth_scale)
  for i, j in np.argwhere(~agree):
    # Where ids differ, both triangles cover the pixel at (nearly) the same depth: a tie.
    ours = np.asarray(frags.depth)[i, j]
    assert np.isfinite(ours) and np.isfinite(ref_depth[i, j])
    assert abs(ours - ref_depth[i, j]) <= 1e-3 * depth_scale + 1e-4
  return frags, ref_id


def face_screen(model, pose, size, id_coeffs=None, exp_coeffs=None, scale_frac=0.38):
  a_id = np.zeros(model.num_id) if id_coeffs is None else id_coeffs
  a_exp = np.zeros(model.num_exp) if exp_coeffs is None else exp_coeffs
  verts = face3d.vertices(model, a_id, a_exp)
  cam = face3d.Camera.create(*pose, scale=scale_frac * size, translation=(size / 2, size / 2))
  return np.asarray(face3d.project(verts, cam))


@pytest.fixture(scope="module")
def face_model():
  return face3d.procedural_model(detail="low")


@pytest.mark.parametrize("pose", [(0, 0, 0), (0.2, 0.6, 0.1), (-0.3, -1.0, -0.2), (0.1, 1.4, 0.0)])
def test_procedural_face_matches_reference(face_model, pose):
  rng = np.random.default_rng(0)
  verts = face_screen(face_model, pose, 96, rng.normal(size=face_model.num_id), rng.normal(size=face_model.num_exp))
  frags, ref_id = assert_matches_reference(verts, face_model.triangles, 96, 96)
  assert (ref_id >= 0).mean() > 0.2


def test_big_triangles_cover_without_holes():
  """A face close to the camera has huge triangles: two triangles fill the image plus a mesh on top."""
  quad = (np.array([[-10.3, -10.1, 0], [200.2, -10.4, 0], [-10.6, 200.3, 0], [200.1, 200.4, 0]], np.float32),
          np.array([[0, 1, 2], [1, 3, 2]], np.int32))
  verts, tris = merge(quad, grid_mesh(9, 9, (20, 100), (30, 110), z=5.0, jitter=2.0))
  frags, ref_id = assert_matches_reference(verts, tris, 128, 128)
  assert np.all(np.asarray(frags.triangle_id) >= 0), "the two big triangles cover every pixel"


def test_two_occluding_surfaces_nearest_wins():
  back = grid_mesh(12, 12, (0, 64), (0, 64), z=-3.0, jitter=1.5, seed=1)
  front = grid_mesh(6, 6, (16, 48), (10, 40), z=4.0, jitter=1.0, seed=2)
  verts, tris = merge(back, front)
  frags, _ = assert_matches_reference(verts, tris, 64, 64)
  tri_id = np.asarray(frags.triangle_id)
  front_ids = tri_id >= len(back[1])
  assert front_ids[20:30, 25:40].all(), "the nearer (larger z) surface wins"
  np.testing.assert_allclose(np.asarray(frags.depth)[front_ids], 4.0, atol=1e-4)


@pytest.mark.slow
def test_intersecting_surfaces():
  a = grid_mesh(8, 8, (-0.3, 48.2), (0.1, 47.9), z=np.linspace(-10, 10, 8)[None, :].repeat(8, 0), jitter=0.7, seed=3)
  b = grid_mesh(9, 9, (0.2, 47.7), (-0.4, 48.3), z=np.linspace(10, -10, 9)[None, :].repeat(9, 0), jitter=0.7, seed=4)
  assert_matches_reference(*merge(a, b), 48, 48)


def test_shared_edges_leave_no_holes():
  """A jittered fine grid spanning beyond the image: every pixel centre is covered exactly."""
  verts, tris = grid_mesh(41, 37, (-3.3, 70.1), (-2.7, 66.9), jitter=0.6, seed=5)
  frags = render.rasterize(verts, tris, 64, 64)
  assert np.all(np.asarray(frags.triangle_id) >= 0)
  weights = np.asarray(frags.barycentric)
  assert weights.min() > -1e-4 and np.allclose(weights.sum(-1), 1.0, atol=1e-5)


def test_no_pinholes_where_edges_pass_within_rounding_of_pixel_centres():
  """Rotated jittered grids over a 256 px image: tens of thousands of edges, some passing within
  float32 rounding of a pixel centre. An edge test whose two sides round differently (e.g. a
  fused multiply-add applied to one side only) leaves single background pixels here."""
  holes = 0
  for seed in range(6):
    verts, tris = grid_mesh(97, 89, (-1.3, 257.1), (-2.7, 258.9), jitter=0.9, seed=seed)
    angle = np.deg2rad(7 + seed)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    verts[:, :2] = (verts[:, :2] - 128) @ rotation.T * 1.3 + 128  # still covers the whole image
    holes += int((np.asarray(render.rasterize(verts, tris, 256, 256).triangle_id) < 0).sum())
  assert holes == 0


def test_pixel_centres_at_half_integers():
  """A triangle around (2.5, 1.5) and nothing else covers exactly pixel row 1, column 2."""
  verts = np.array([[2.2, 1.2, 0], [2.9, 1.3, 0], [2.4, 1.9, 0]], np.float32)
  frags = render.rasterize(verts, np.array([[0, 1, 2]]), 4, 5)
  want = np.full((4, 5), -1)
  want[1, 2] = 0
  np.testing.assert_array_equal(np.asarray(frags.triangle_id), want)
  assert np.isneginf(np.asarray(frags.depth)[0, 0]) and not np.asarray(frags.barycentric)[0, 0].any()


def test_degenerate_nan_and_offscreen_triangles_are_ignored():
  verts = np.array([[1, 1, 0], [5, 5, 0], [9, 9, 0], [np.nan, 0, 0], [-50, -50, 0], [-40, -50, 0], [-45, -40, 0]], np.float32)
  tris = np.array([[0, 1, 2], [0, 1, 3], [4, 5, 6]], np.int32)
  frags = render.rasterize(verts, tris, 16, 16)
  assert np.all(np.asarray(frags.triangle_id) == -1)


def test_default_inside_jit_is_exact_beyond_its_first_pool():
  """Big triangles need many times the pool that jit sizes from the image: the loop draws the rest,
  in as many passes as the data needs, and nothing overflows. Two frames share one pass, so the
  pool and the loop's blocks cross from one frame's chunks to the next. Called per device under
  shard_map, as training's scene builder calls it."""
  big, tris = merge(grid_mesh(3, 3, (0, 64), (0, 64), jitter=3.0),
                    grid_mesh(5, 5, (10, 50), (12, 52), z=2.0, jitter=1.0, seed=7))
  small = (big - 32.0) * np.array([0.3, 0.3, 1.0], np.float32) + 32.0
  need = int(np.max(np.asarray(render.chunks_needed(big, tris, 64, 64, 4))))
  assert need > 3 * render.default_capacity(len(tris), 64, 64, 4), "the mesh must need several passes"
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  per_device = jax.shard_map(lambda v: render.rasterize(v, tris, 64, 64, chunk=4, group=2), mesh=mesh,
                             in_specs=jax.P("data"), out_specs=jax.P("data"))
  out = jax.jit(per_device)(np.stack([small, big]))
  assert not np.asarray(out.overflow).any()
  for frame, verts in enumerate((small, big)):
    np.testing.assert_array_equal(np.asarray(out.triangle_id[frame]), rasterize_reference(verts, tris, 64, 64)[0])


@pytest.mark.slow
def test_a_fixed_capacity_too_small_is_reported():
  verts, tris = grid_mesh(3, 3, (0, 120), (0, 120), jitter=3.0)
  fn = jax.jit(lambda v: render.rasterize(v, tris, 128, 128, chunk=4, capacity=16))
  small = fn(verts)
  assert bool(small.overflow)
  exact, _ = assert_matches_reference(verts, tris, 128, 128, chunk=4)
  # The chunks it needs is what callers pass as a fixed capacity inside jit.
  need = int(render.chunks_needed(verts, tris, 128, 128, 4))
  sized = jax.jit(lambda v: render.rasterize(v, tris, 128, 128, chunk=4, capacity=need))(verts)
  assert not bool(sized.overflow)
  np.testing.assert_array_equal(np.asarray(sized.triangle_id), np.asarray(exact.triangle_id))


def test_capacity_buckets_and_bad_capacities():
  assert [render.capacity_bucket(n) for n in (0, 1, 256, 257, 5000)] == [0, 256, 256, 512, 8192]
  with pytest.raises(ValueError, match="capacity"):
    render.rasterize(np.zeros((3, 3)), np.array([[0, 1, 2]]), 8, 8, capacity="big")
  with pytest.raises(ValueError, match="capacity"):
    render.rasterize(np.zeros((3, 3)), np.array([[0, 1, 2]]), 8, 8, capacity=-1)


@pytest.mark.parametrize("chunk", [1, 3, 4, 16, 64])
def test_chunk_size_does_not_change_the_result(chunk):
  verts, tris = dome(15, 64)
  base = render.rasterize(verts, tris, 64, 64, chunk=2)
  other = render.rasterize(verts, tris, 64, 64, chunk=chunk)
  np.testing.assert_array_equal(np.asarray(other.triangle_id), np.asarray(base.triangle_id))


@pytest.mark.parametrize("group", [1, 2, 3])
def test_batch_equals_single_frames(group):
  verts, tris = dome(12, 48)
  batch = np.stack([verts, verts + np.array([3.5, -2.0, 0], np.float32), verts * np.array([0.7, 0.8, 1], np.float32)])
  frags = render.rasterize(batch.reshape(3, 1, -1, 3), tris, 48, 48, group=group)
  assert frags.triangle_id.shape == (3, 1, 48, 48) and frags.overflow.shape == (3, 1)
  for b in range(3):
    single = render.rasterize(batch[b], tris, 48, 48)
    np.testing.assert_array_equal(np.asarray(frags.triangle_id[b, 0]), np.asarray(single.triangle_id))
    np.testing.assert_allclose(np.asarray(frags.barycentric[b, 0]), np.asarray(single.barycentric), atol=1e-6)
    np.testing.assert_allclose(np.asarray(frags.depth[b, 0]), np.asarray(single.depth), atol=1e-5)


@pytest.mark.slow
def test_batch_overflow_is_reported_per_frame():
  """Frames share a pool of batch * capacity extra chunks; only frames past its end overflow."""
  small, tris = grid_mesh(9, 9, (10, 30), (10, 30))
  big = grid_mesh(9, 9, (0, 128), (0, 128))[0]
  need_small = int(render.chunks_needed(small, tris, 128, 128, 4))
  need_big = int(render.chunks_needed(big, tris, 128, 128, 4))
  capacity = (need_small + need_big) // 2 + 1  # the pool of 2 fits both when the small frame is first
  fn = jax.jit(lambda v: render.rasterize(v, tris, 128, 128, chunk=4, capacity=capacity, group=2))
  assert not np.asarray(fn(np.stack([small, big])).overflow).any()
  tight = jax.jit(lambda v: render.rasterize(v, tris, 128, 128, chunk=4, capacity=need_small, group=2))
  out = tight(np.stack([small, big]))
  np.testing.assert_array_equal(np.asarray(out.overflow), [False, True])
  np.testing.assert_array_equal(np.asarray(out.triangle_id[0]), np.asarray(render.rasterize(small, tris, 128, 128).triangle_id))


def test_vmap_of_rasterize_matches_the_batch():
  verts, tris = dome(10, 32)
  batch = np.stack([verts, verts + np.array([1.5, 2.0, 0], np.float32)])
  mapped = jax.vmap(lambda v: render.rasterize(v, tris, 32, 32))(batch)
  direct = render.rasterize(batch, tris, 32, 32)
  np.testing.assert_array_equal(np.asarray(mapped.triangle_id), np.asarray(direct.triangle_id))


def test_gradients_reach_vertices():
  verts, tris = dome(8, 32)

  def loss(v):
    frags = render.rasterize(v, tris, 32, 32)
    return jnp.sum(jnp.where(frags.mask, frags.depth, 0.0)) + jnp.sum(frags.barycentric[..., 0] ** 2)

  grad = jax.grad(loss)(jnp.asarray(verts))
  assert np.all(np.isfinite(np.asarray(grad)))
  assert np.abs(np.asarray(grad)).sum() > 0


def test_rejects_bad_shapes():
  with pytest.raises(ValueError, match=r"\[\.\.\., N, 3\]"):
    render.rasterize(np.zeros((4, 2)), np.zeros((1, 3), np.int32), 8, 8)
  with pytest.raises(ValueError, match=r"\[F, 3\]"):
    render.rasterize(np.zeros((4, 3)), np.zeros((1, 4), np.int32), 8, 8)
  with pytest.raises(ValueError, match="positive"):
    render.rasterize(np.zeros((4, 3)), np.zeros((1, 3), np.int32), 0, 8)
