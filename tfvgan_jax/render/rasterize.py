"""Rasterization of triangle meshes in screen space into per-pixel fragments, in pure JAX.

Screen space (DESIGN.md): x to the right, y down, pixel (row i, column j) has its centre at
(j + 0.5, i + 0.5); depth z grows TOWARD the camera and the z-buffer keeps the LARGEST z.

How it works, with static shapes throughout:
  1. Each triangle's bounding box of covered pixel centres, read in row-major order, is cut into
     chunks of Q consecutive pixels (Q static, e.g. 2 for ~75k triangles at 256 px). Every
     triangle owns one chunk slot (its first chunk); triangles whose box holds more than Q pixels
     put their further chunks into an "extra" buffer of fixed capacity, and by default those
     that do not fit into further passes of a loop. Chunks follow the box's rows, so only the last
     chunk of a triangle is partly empty, whatever the box's shape. With a fixed capacity and no
     loop, `Fragments.overflow` is set on frames that did not fit: pixels are never dropped silently.
  2. Every pixel of every chunk is tested against its triangle with edge equations whose values
     for the two triangles of a shared edge are exact (bitwise) negatives of each other, so a
     pixel centre on or near a shared edge always belongs to one of them: no holes.
  3. Visibility is resolved with ONE scatter-max of a packed uint32 key: depth quantized to the
     mesh's depth range in the high bits, triangle id + 1 in the low bits. A single resolve
     cannot disagree with itself the way a depth pass followed by a match pass can.
  4. Barycentrics and depth of the winning triangle are recomputed from its vertices with
     differentiable operations, so gradients reach the vertices.

`rasterize` is exact for any mesh by default (`capacity='auto'`): on concrete arrays it counts the
chunks first and sizes the extra buffer to a power-of-two bucket that fits (recompiling only when a
mesh needs the next bucket); inside `jit` it draws a pool sized from the image (`default_capacity`)
in straight-line code and whatever does not fit by a loop whose number of passes follows the data.
A fixed `capacity=N` draws no loop and reports the frames that did not fit in `Fragments.overflow`.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

BACKGROUND_ID = -1


class Fragments(NamedTuple):
  """Per-pixel result of rasterization. Leading dims [...] are a batch.

  Attributes:
    triangle_id: [..., H, W] int32, the visible triangle, -1 for background.
    barycentric: [..., H, W, 3] float32 weights of its vertices at the pixel centre (0 on background).
    depth: [..., H, W] float32 interpolated screen depth (larger = nearer); -inf on background.
    overflow: [...] bool, True when a fixed extra-chunk capacity was too small and pixels are missing
      (always False with the default capacity='auto').
  """

  triangle_id: jax.Array
  barycentric: jax.Array
  depth: jax.Array
  overflow: jax.Array

  @property
  def mask(self) -> jax.Array:
    """[..., H, W] bool: pixels covered by the mesh."""
    return self.triangle_id >= 0


def default_chunk(num_triangles: int, height: int, width: int) -> int:
  """Pixels per chunk Q for a mesh of this size (a power of two in [1, 64]).

  About the mean number of pixel centres in a triangle's bounding box, estimated as
  1.6 H W / F for a face filling the crop (measured on the procedural face): most triangles then
  fit their first chunk, while the extra buffer, whose slots cost more than a tested pixel, stays
  small. For the procedural face: Q = 1 for ~75k triangles at 128 px, 2 at 256 px, 8 at 512 px;
  64 for ~1k triangles at 256 px and above.
  """
  mean_box = 1.6 * height * width / max(num_triangles, 1)
  return int(min(64, 2 ** math.ceil(math.log2(max(mean_box, 1.0)))))


def default_capacity(num_triangles: int, height: int, width: int, chunk: int) -> int:
  """Extra chunks per frame drawn in straight-line code inside jit when no capacity is given.

  5/8 of the image's chunks (H W / Q): the procedural face filling the crop as in training needs
  0.2 of them at 128 px with ~75k triangles, 0.5 at 256 px, 0.9 with ~1k triangles at 128 px;
  what does not fit is drawn by the exact loop of `rasterize`. The worst-case pool this replaces
  (four times the image area) made the rasterizer 2-3x slower as training called it.
  """
  del num_triangles  # the image, not the mesh, bounds what a face filling it needs
  return _round_up(5 * height * width // (8 * chunk), 256)


def _round_up(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


def gather_corners(values: jax.Array, triangles: jax.Array, triangle_id: jax.Array) -> jax.Array:
  """Per-vertex values at the corners of the given triangles.

  Args:
    values: [N, C] per-vertex values (e.g. screen vertices).
    triangles: [F, 3] (a NumPy array or a JAX array).
    triangle_id: [...] int32; -1 (background) reads triangle 0.

  Returns:
    [..., 3, C].
  """
  corner_ids = jnp.take(jnp.asarray(triangles), jnp.maximum(triangle_id, 0), axis=0, mode="clip")
  # mode="clip": indices are validated upstream; the default "fill" mode would re-check every
  # index wherever XLA fuses the gather.
  return jnp.take(values, corner_ids, axis=0, mode="clip")


def interpolate_attributes(fragments: "Fragments", vertex_values: jax.Array, triangles: jax.Array) -> jax.Array:
  """Per-pixel barycentric interpolation of per-vertex values (colours, positions, motion ...).

  Args:
    fragments: single-image fragments [H, W].
    vertex_values: [N, C].
    triangles: [F, 3].

  Returns:
    [H, W, C]; zero on background. Differentiable in the values and the barycentrics.
  """
  # Materialized once, and summed corner by corner: an einsum over the size-3 axis becomes a slow
  # batched dot on CPU.
  corners = jax.lax.optimization_barrier(gather_corners(vertex_values, triangles, fragments.triangle_id))
  weights = fragments.barycentric
  out = weights[..., 0:1] * corners[..., 0, :] + weights[..., 1:2] * corners[..., 1, :] + weights[..., 2:3] * corners[..., 2, :]
  return jnp.where(fragments.mask[..., None], out, 0.0)


def _split_corners(corners: jax.Array):
  """[..., 3, 3] corners -> xs, ys, zs: three tuples of three [...] arrays (one per corner).

  Structure of arrays on purpose: XLA on CPU reduces and selects along a trailing axis of size 3
  several times slower than it combines separate arrays elementwise.
  """
  return tuple(tuple(corners[..., k, c] for k in range(3)) for c in range(3))


def _min3(a, b, c):
  return jnp.minimum(jnp.minimum(a, b), c)


def _max3(a, b, c):
  return jnp.maximum(jnp.maximum(a, b), c)


def _pixel_range(coords, size: int):
  """Inclusive range of pixel indices whose centres lie within [min, max] of three coordinates.

  Returns:
    first, last: int32 arrays; empty where last < first (also for non-finite corners).
  """
  lo, hi = _min3(*coords), _max3(*coords)
  # Centre c = j + 0.5 lies in [lo, hi]  <=>  ceil(lo - 0.5) <= j <= floor(hi - 0.5).
  first = jnp.ceil(jnp.clip(lo - 0.5, -1.0, float(size)))
  last = jnp.floor(jnp.clip(hi - 0.5, -1.0, float(size)))
  first = jnp.maximum(first, 0.0).astype(jnp.int32)
  last = jnp.minimum(last, float(size - 1)).astype(jnp.int32)
  return first, jnp.where(jnp.isfinite(lo) & jnp.isfinite(hi), last, -1)


def _chunk_counts(xs, ys, height: int, width: int, chunk: int):
  """Per triangle: first pixel (col0, row0), box width, pixel count and number of chunks."""
  col0, col1 = _pixel_range(xs, width)
  row0, row1 = _pixel_range(ys, height)
  box_width = jnp.maximum(col1 - col0 + 1, 0)
  box_pixels = box_width * jnp.maximum(row1 - row0 + 1, 0)
  return col0, row0, box_width, box_pixels, (box_pixels + chunk - 1) // chunk


def _signed_area2(xs, ys):
  """Twice the signed screen area of triangles (positive = clockwise on screen, y down)."""
  return (xs[1] - xs[0]) * (ys[2] - ys[0]) - (ys[1] - ys[0]) * (xs[2] - xs[0])


def _cross_to(start_x, start_y, dir_x, dir_y, px, py):
  """cross(dir, p - start): the edge function of the edge from `start` along `dir` at p."""
  return dir_x * (py - start_y) - dir_y * (px - start_x)


def _edge_equations(xs, ys, origin_x: float, origin_y: float):
  """Per edge k (opposite corner k) the edge equation E_k(p) = c_k + g_k . p, up to orientation.

  E_k(p) = cross(b - a, p - a) for the edge's endpoints a = corner k+1, b = corner k+2, expanded
  as c + p_x (a_y - b_y) + p_y (b_x - a_x) with c = a_x b_y - a_y b_x. The two triangles sharing
  an edge see it with a and b swapped, and every term then changes sign exactly (bitwise), so a
  pixel centre near the edge cannot be rejected by both: no holes, whatever the rounding. The
  constant is written as ((a_x b_y - a_y b_x) - (b_x a_y - b_y a_x)) / 2: the compiler may fuse
  a product and a difference into one fused multiply-add, which rounds the two products
  differently; in this form a swap of a and b only swaps the two halves, so it still negates c
  exactly. Coordinates are taken relative to `origin` (the image centre) to keep products small.

  Returns:
    three tuples (c, g_x, g_y) of [F] arrays; E_k / area2 is the barycentric weight of corner k.
  """
  edges = []
  for k in range(3):
    a, b = (k + 1) % 3, (k + 2) % 3
    ax, ay = xs[a] - origin_x, ys[a] - origin_y
    bx, by = xs[b] - origin_x, ys[b] - origin_y
    c = ((ax * by - ay * bx) - (bx * ay - by * ax)) * 0.5
    edges.append((c, ay - by, bx - ax))
  return tuple(edges)


def _zbuffer(screen_vertices, triangles, height: int, width: int, chunk: int, capacity: int, zbuffer=None):
  """The packed z-buffer [B * H * W] uint32 of a batch of meshes [B, N, 3] and its overflow [B].

  Without `zbuffer`: each triangle's first chunk and a pool of B * capacity extra chunks, in
  straight-line code; frames whose extra chunks lie beyond the pool overflow. With `zbuffer` (of
  the same frames): all extra chunks drawn into it, `capacity` per pass of a loop; none overflows.

  The batch is one flat list of B * F triangles drawn into B * H * W pixels, so it costs one
  scatter, one prefix sum and one shared pool of B * capacity extra chunks (a vmapped scatter
  would index in two dimensions, and a loop runs slower per frame; see `default_group`).
  """
  batch, num_tri = screen_vertices.shape[0], triangles.shape[0]
  id_bits = int(num_tri).bit_length()
  depth_bits = 32 - id_bits
  if depth_bits < 8:
    raise ValueError(f"{num_tri} triangles leave only {depth_bits} bits of depth in the packed key")
  num_pixels = height * width

  origin_x, origin_y = width / 2, height / 2
  levels = float(2 ** depth_bits - 1)

  def prepare(verts):
    """Per triangle of the flat B * F list: what its chunks need, and the prefix sum of its extra
    chunks. Unusable triangles get c = -1 and no chunk, so no pixel passes their edge tests."""
    xs, ys, zs = _split_corners(jnp.take(verts, triangles, axis=1, mode="clip"))  # [B, F] each
    col0, row0, box_width, box_pixels, num_chunks = _chunk_counts(xs, ys, height, width, chunk)
    area2 = _signed_area2(xs, ys)
    usable = (area2 != 0) & jnp.isfinite(area2) & jnp.isfinite(_min3(*zs))
    num_chunks = jnp.where(usable, num_chunks, 0)
    orientation = jnp.sign(area2)
    edges = _edge_equations(xs, ys, origin_x, origin_y)
    # Depth is quantized over each frame's own range; the per-corner factors below fold that range
    # and 1 / |area2| in, so the weighted sum of a pixel is already the quantization level.
    finite_z = jnp.where(jnp.isfinite(verts[..., 2]), verts[..., 2], 0.0)
    z_min, z_max = jnp.min(finite_z, axis=1, keepdims=True), jnp.max(finite_z, axis=1, keepdims=True)
    z_scale = jnp.where(z_max > z_min, levels / (z_max - z_min), 0.0)
    level_per_area = z_scale / jnp.where(usable, jnp.abs(area2), 1.0)
    frame_offset = jnp.arange(batch, dtype=jnp.int32)[:, None] * num_pixels + row0 * width + col0
    fields = [frame_offset, col0, row0, box_width.astype(jnp.float32), box_pixels]
    for k, (c, g_x, g_y) in enumerate(edges):
      # Oriented so that E >= 0 inside for either winding (multiplying by +-1 is exact).
      fields += [jnp.where(usable, c * orientation, -1.0), g_x * orientation, g_y * orientation,
                 (zs[k] - z_min) * level_per_area]
    extra = jnp.maximum(num_chunks - 1, 0).reshape(-1)
    return [f.reshape(-1) for f in fields], extra, jnp.cumsum(extra)

  offs = jnp.arange(chunk, dtype=jnp.int32)

  def candidates(tri, first, fields):
    """Packed keys (0 = no hit) and pixel indices of the chunks starting at box pixel `first`.

    Args:
      tri, first: [M] triangle (index into the flat B * F list) and row-major index of the
        chunk's first pixel in that triangle's box.
      fields: the `prepare` fields of these M triangles.

    Returns:
      key, index: [M * Q]; index into the flat B * H * W image, B * H * W where nothing is hit.
    """
    start, c0, r0, w, n = (f[:, None] for f in fields[:5])
    linear = first[:, None] + offs[None, :]
    # Exact: (l + 0.5) / w lies at least 0.5 / w from an integer, far more than float32 rounding
    # for boxes under 2^22 pixels (2048 x 2048).
    row = jnp.floor((linear.astype(jnp.float32) + 0.5) / w).astype(jnp.int32)
    col = linear - row * w.astype(jnp.int32)
    inside = linear < n
    cx = (c0 + col).astype(jnp.float32) + (0.5 - origin_x)
    cy = (r0 + row).astype(jnp.float32) + (0.5 - origin_y)
    level = 0.0
    for k in range(3):
      c, g_x, g_y, level_k = (f[:, None] for f in fields[5 + 4 * k:9 + 4 * k])
      e = c + g_x * cx + g_y * cy
      inside &= e >= 0
      level = level + e * level_k
    quantized = jnp.clip(jnp.floor(level), 0, levels).astype(jnp.uint32)
    local_id = (tri % num_tri + 1).astype(jnp.uint32)[:, None]
    key = jnp.where(inside, (quantized << id_bits) | local_id, 0)
    # The index reads the key rather than `inside`, so the edge tests are computed once.
    index = jnp.where(key != 0, start + row * width + col, batch * num_pixels)
    return key.reshape(-1), index.reshape(-1)

  def draw_extra(zbuffer, prepared, start, size: int):
    """Draws the extra chunks in slots [start, start + size) of the flat list of all extra chunks."""
    fields, extra, extra_end = prepared
    slot = start + jnp.arange(size, dtype=jnp.int32)
    owner = jnp.minimum(jnp.searchsorted(extra_end, slot, side="right"), batch * num_tri - 1).astype(jnp.int32)
    chunk_index = 1 + slot - (extra_end[owner] - extra[owner])
    # Unused slots start past their owner's last pixel, so none of their pixels is tested.
    first = jnp.where(slot < extra_end[-1], chunk_index * chunk, jnp.iinfo(jnp.int32).max // 2)
    key, index = candidates(owner, first, [f[owner] for f in fields])
    return zbuffer.at[index].max(key, mode="drop")

  verts = jax.lax.stop_gradient(screen_vertices.astype(jnp.float32))
  prepared = prepare(verts)
  extra_end = prepared[2]
  if zbuffer is not None:
    # Every extra chunk again, a block per pass, for as many passes as the data needs: drawing a
    # chunk twice changes nothing (a max), so the pool already drawn needs no bookkeeping.
    return jax.lax.while_loop(lambda carry: carry[1] < extra_end[-1],
                              lambda carry: (draw_extra(carry[0], prepared, carry[1], capacity), carry[1] + capacity),
                              (zbuffer, jnp.zeros((), jnp.int32)))[0], jnp.zeros((batch,), bool)
  all_tri = jnp.arange(batch * num_tri, dtype=jnp.int32)
  key, index = candidates(all_tri, jnp.zeros_like(all_tri), prepared[0])
  zbuffer = jnp.zeros((batch * num_pixels,), jnp.uint32).at[index].max(key, mode="drop")
  pool = batch * capacity
  if pool > 0:
    zbuffer = draw_extra(zbuffer, prepared, 0, pool)
  # A frame overflows when its last extra chunk lies beyond the shared pool.
  return zbuffer, extra_end.reshape(batch, num_tri)[:, -1] > pool


def _plane_at(screen_vertices, triangles, tri, px, py, hit):
  """Barycentric weights and depth of points (px, py) in the planes of triangles `tri`.

  Differentiable in the vertices. The corner gather is materialized once: fused into each use,
  the random-access gather would run once per output.

  Args:
    screen_vertices: [N, 3]; triangles: [F, 3].
    tri: [...] int32 triangle per point (-1 reads triangle 0, masked by `hit`).
    px, py: screen coordinates broadcastable to tri's shape.
    hit: [...] bool, points that have a triangle.

  Returns:
    weights: three [...] arrays (zero where `hit` is False or the triangle is degenerate);
    depth: [...], -inf where `hit` is False.
  """
  corners = jax.lax.optimization_barrier(gather_corners(screen_vertices, triangles, tri))
  xs, ys, zs = _split_corners(corners)
  area2 = _signed_area2(xs, ys)
  ok = hit & (area2 != 0)
  inv_area = 1.0 / jnp.where(ok, area2, 1.0)
  weights = []
  for k in range(3):
    a, b = (k + 1) % 3, (k + 2) % 3
    w = _cross_to(xs[a], ys[a], xs[b] - xs[a], ys[b] - ys[a], px, py) * inv_area
    weights.append(jnp.where(ok, w, 0.0))
  depth = weights[0] * zs[0] + weights[1] * zs[1] + weights[2] * zs[2]
  return weights, jnp.where(hit, depth, -jnp.inf)


def interpolate_at_pixels(screen_vertices: jax.Array, triangles: jax.Array, triangle_id: jax.Array):
  """Barycentrics and depth of each pixel centre in its triangle, differentiable in the vertices.

  Args:
    screen_vertices: [N, 3] screen positions and depths.
    triangles: [F, 3] int32.
    triangle_id: [H, W] int32, -1 for background.

  Returns:
    barycentric [H, W, 3] (zeros on background) and depth [H, W] (-inf on background).
  """
  height, width = triangle_id.shape
  px = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5
  py = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5
  weights, depth = _plane_at(screen_vertices, triangles, triangle_id, px, py, triangle_id >= 0)
  return jnp.stack(weights, axis=-1), depth


@functools.partial(jax.jit, static_argnames=("height", "width", "chunk"))
def chunks_needed(screen_vertices: jax.Array, triangles: jax.Array, height: int, width: int, chunk: int) -> jax.Array:
  """Extra chunks (beyond one per triangle) a mesh needs: the `capacity` that avoids overflow.

  Args:
    screen_vertices: [..., N, 3]; triangles: [F, 3].

  Returns:
    [...] int32.
  """

  def one(verts):
    xs, ys, _ = _split_corners(jnp.take(verts, triangles, axis=0, mode="clip"))
    num_chunks = _chunk_counts(xs, ys, height, width, chunk)[-1]
    return jnp.sum(jnp.maximum(num_chunks - 1, 0))

  flat = screen_vertices.reshape((-1,) + screen_vertices.shape[-2:])
  return jax.vmap(one)(flat).reshape(screen_vertices.shape[:-2])


def default_group(num_triangles: int, batch: int, height: int, width: int) -> int:
  """Frames per flat pass of a batch.

  On CPU, a flat pass over more than ~128k triangles or ~256k pixels outgrows the caches (8
  frames of 75k triangles at 256 px, or of 1k triangles at 512 px, took twice as long per frame
  as one), while loops over frames (lax.map, fori_loop) ran 2.3x slower per frame than
  straight-line code: so a batch is cut into groups within both limits, each a separate flat
  pass. Accelerators take the whole batch at once.
  """
  if jax.default_backend() != "cpu":
    return max(batch, 1)
  return max(1, min(batch, (1 << 17) // max(num_triangles, 1), (1 << 18) // max(height * width, 1)))


@functools.partial(jax.jit, static_argnames=("height", "width", "chunk", "capacity", "group", "exact"))
def _rasterize_jit(screen_vertices, triangles, height, width, chunk, capacity, group, exact):
  batch_shape = screen_vertices.shape[:-2]
  flat = screen_vertices.reshape((-1,) + screen_vertices.shape[-2:])
  # Straight-line code over groups (see default_group): compile time grows with their number.
  parts = [_zbuffer(flat[i:i + group], triangles, height, width, chunk, capacity)
           for i in range(0, flat.shape[0], group)]
  zbuffer, overflow = (jnp.concatenate(x) for x in zip(*parts))
  if exact:
    # Frames beyond their pool are drawn again by one loop over the whole batch, compiled once
    # whatever the number of groups. The branch starts again from the vertices: handing it the
    # per-triangle fields instead would materialize them, which costs the common case (no loop)
    # half as much again as the whole rasterization.
    block = max(256, _round_up(group * capacity, 256))
    zbuffer = jax.lax.cond(jnp.any(overflow),
                           lambda zbuffer, verts: _zbuffer(verts, triangles, height, width, chunk, block, zbuffer)[0],
                           lambda zbuffer, verts: zbuffer, zbuffer, flat)
    overflow = jnp.zeros_like(overflow)
  id_bits = int(triangles.shape[0]).bit_length()
  triangle_id = (zbuffer & jnp.uint32((1 << id_bits) - 1)).astype(jnp.int32) - 1
  triangle_id = triangle_id.reshape(flat.shape[0], height, width)
  barycentric, depth = jax.vmap(interpolate_at_pixels, in_axes=(0, None, 0))(flat, triangles, triangle_id)
  out = Fragments(triangle_id, barycentric, depth, overflow)
  return jax.tree.map(lambda x: x.reshape(batch_shape + x.shape[1:]), out)


def _is_concrete(*arrays) -> bool:
  return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def rasterize(
    screen_vertices: jax.Array,
    triangles: jax.Array,
    height: int,
    width: int,
    *,
    chunk: Optional[int] = None,
    capacity: Union[int, str, None] = "auto",
    group: Optional[int] = None,
) -> Fragments:
  """Rasterizes a mesh (or a batch of meshes sharing triangles) with an exact z-buffer.

  The nearest surface (largest depth z) wins each pixel centre; a pixel centre exactly on a shared
  edge belongs to one of the two triangles. Depth is compared after quantization to
  2^(32 - bits(F)) levels over the mesh's depth range (2^15 levels for 75k triangles), so two
  surfaces closer than that in depth at a pixel are a tie, broken by the larger triangle id.

  Args:
    screen_vertices: [..., N, 3] screen x, y (pixels) and depth z (see `face3d.project`).
    triangles: [F, 3] int32 vertex indices.
    height, width: image size in pixels.
    chunk: pixels per chunk Q (static). Default: `default_chunk(F, height, width)`.
    capacity: extra chunks per frame drawn in straight-line code (static).
      'auto' (or None), the default, is exact for any mesh: on concrete inputs the pool is sized
      to fit (a power-of-two bucket of `chunks_needed`); under a transformation (jit, grad, vmap)
      it is `default_capacity(...)`, and the chunks beyond it are drawn by a loop of pool-sized
      blocks whose number follows the data (none when the pool suffices). `Fragments.overflow`
      is then always False.
      An int N (or its decimal string, as a config override writes it) fixes the pool at N with no loop: the frames whose chunks do not fit are reported
      in `Fragments.overflow` and miss pixels (the fastest choice when N is measured with
      `chunks_needed` on the data, as a benchmark does).
    group: frames per flat pass of a batch (static); default `default_group(F, batch, H, W)`. Frames of
      one pass share a pool of group * capacity extra chunks.

  Returns:
    Fragments with leading dims [...].
  """
  triangles = jnp.asarray(triangles, jnp.int32)
  screen_vertices = jnp.asarray(screen_vertices, jnp.float32)
  if screen_vertices.ndim < 2 or screen_vertices.shape[-1] != 3:
    raise ValueError(f"screen_vertices must be [..., N, 3], got {screen_vertices.shape}")
  if triangles.ndim != 2 or triangles.shape[1] != 3 or triangles.shape[0] == 0:
    raise ValueError(f"triangles must be [F, 3] with F >= 1, got {triangles.shape}")
  if height <= 0 or width <= 0:
    raise ValueError(f"image size must be positive, got {height}x{width}")
  chunk = chunk or default_chunk(triangles.shape[0], height, width)
  exact = False
  if capacity is None or capacity == "auto":
    if _is_concrete(screen_vertices, triangles):
      needed = int(np.max(np.asarray(chunks_needed(screen_vertices, triangles, height, width, chunk)), initial=0))
      capacity = capacity_bucket(needed)
    else:
      capacity, exact = default_capacity(triangles.shape[0], height, width, chunk), True
  elif not str(capacity).isdigit():
    raise ValueError(f"capacity must be 'auto' or a number of chunks >= 0, got {capacity!r}")
  batch = math.prod(screen_vertices.shape[:-2])
  group = group or default_group(triangles.shape[0], batch, height, width)
  return _rasterize_jit(screen_vertices, triangles, height, width, chunk, int(capacity), group, exact)


def capacity_bucket(needed: int) -> int:
  """The power-of-two pool (at least 256 chunks, 0 for none) that holds `needed` extra chunks: the
  few sizes a caller compiles for when it sizes the pool from `chunks_needed`."""
  needed = int(needed)
  return 0 if needed <= 0 else 1 << max(8, (needed - 1).bit_length())


def depth_at(fragments: Fragments, screen_vertices: jax.Array, triangles: jax.Array, points_xy: jax.Array) -> jax.Array:
  """The z-buffer read at sub-pixel positions: the plane of the triangle visible in the pixel that
  contains each point, evaluated at the point itself.

  Reading the plane rather than the depth stored at the pixel centre removes the half-pixel slope
  error on tilted surfaces, so a point of the visible surface reads back its own depth.

  Args:
    fragments: single-image fragments [H, W].
    screen_vertices: [N, 3] the vertices the fragments were rasterized from.
    triangles: [F, 3].
    points_xy: [..., 2] screen positions.

  Returns:
    [...] depth, -inf where the point is outside the image or on background.
  """
  col = jnp.floor(points_xy[..., 0]).astype(jnp.int32)
  row = jnp.floor(points_xy[..., 1]).astype(jnp.int32)
  return _depth_in_pixel(fragments, screen_vertices, triangles, row, col, points_xy[..., 0], points_xy[..., 1],
                         jnp.all(jnp.isfinite(points_xy), -1))


def _depth_in_pixel(fragments: Fragments, screen_vertices, triangles, row, col, x, y, finite) -> jax.Array:
  """The plane of the triangle visible in pixel (row, col), evaluated at the point (x, y): -inf
  where the pixel is outside the image or background, or where `finite` is False."""
  height, width = fragments.triangle_id.shape
  inside = finite & (col >= 0) & (col < width) & (row >= 0) & (row < height)
  tri = fragments.triangle_id[jnp.clip(row, 0, height - 1), jnp.clip(col, 0, width - 1)]
  _, depth = _plane_at(screen_vertices, triangles, tri, x, y, inside & (tri >= 0))
  return depth


def visible(fragments: Fragments, screen_vertices: jax.Array, triangles: jax.Array, points: jax.Array,
            tolerance: float = 0.5) -> jax.Array:
  """Whether surface points are the visible surface of a rendered frame (TFVGAN eq. 11/13,
  UniFaceGAN eq. 13/15): Q_z >= Z(Q_x, Q_y) - tolerance.

  Z is read from the z-buffer around Q: the planes of the triangles visible at the four pixel
  centres nearest to Q (the 2 x 2 block whose centres surround it), each evaluated at Q itself as
  in `depth_at`, and the farthest of them. Reading only the pixel that contains Q leaves specks of
  missing texture and flow: where the mesh's triangles are smaller than a pixel, that pixel's
  triangle is often a few triangles away from Q's, and its plane, extrapolated up to a pixel,
  misses a curved surface by more than the tolerance; at the silhouette that pixel may be
  background although Q is on the face. (On the shared clips at 128 px, a render of one frame's
  face from another frame of its clip found no texture for 1.07% of the face's pixels read that
  way, nearly all in specks of 1-3 pixels, and for 0.12% read from the 2 x 2 block.) An occluder
  still hides Q wherever it covers all four pixels, so an occlusion boundary moves by a pixel at
  most.

  Args:
    fragments: single-image fragments [H, W].
    screen_vertices: [N, 3] the vertices the fragments were rasterized from.
    triangles: [F, 3].
    points: [..., 3] screen x, y and depth z of the points.
    tolerance: depth slack in pixels (depth is in pixel units), for surfaces that curve between a
      point and the plane it is compared with. Occluders are many pixels nearer.

  Returns:
    [...] bool; False outside the image and where none of the four pixels is covered.
  """
  x, y = points[..., 0], points[..., 1]
  finite = jnp.isfinite(x) & jnp.isfinite(y)
  # The top-left of the 2 x 2 pixels whose centres (integer + 0.5) surround the point.
  left = jnp.floor(jnp.where(finite, x, 0.0) - 0.5).astype(jnp.int32)
  top = jnp.floor(jnp.where(finite, y, 0.0) - 0.5).astype(jnp.int32)
  farthest = jnp.full(x.shape, jnp.inf, points.dtype)
  for row_step in (0, 1):
    for col_step in (0, 1):
      depth = _depth_in_pixel(fragments, screen_vertices, triangles, top + row_step, left + col_step, x, y, finite)
      farthest = jnp.minimum(farthest, jnp.where(jnp.isfinite(depth), depth, jnp.inf))
  return jnp.isfinite(farthest) & (points[..., 2] >= farthest - tolerance)
