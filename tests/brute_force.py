"""An independent brute-force rasterizer in NumPy (float64), the reference for the JAX one.

It loops over triangles in Python and tests every pixel centre of each bounding box with
barycentric coordinates solved by a 2x2 linear system; the nearest (largest depth) wins, ties keep
the first triangle drawn.
"""

import numpy as np


def rasterize_reference(screen_vertices, triangles, height, width):
  """Returns (triangle_id [H,W] int, barycentric [H,W,3], depth [H,W]) like render.rasterize."""
  verts = np.asarray(screen_vertices, np.float64)
  tris = np.asarray(triangles)
  tri_id = np.full((height, width), -1, np.int64)
  bary = np.zeros((height, width, 3))
  depth = np.full((height, width), -np.inf)
  for t, (i0, i1, i2) in enumerate(tris):
    p0, p1, p2 = verts[i0], verts[i1], verts[i2]
    m = np.array([[p1[0] - p0[0], p2[0] - p0[0]], [p1[1] - p0[1], p2[1] - p0[1]]])
    det = np.linalg.det(m)
    if det == 0 or not np.isfinite(det):
      continue
    xs = [p0[0], p1[0], p2[0]]
    ys = [p0[1], p1[1], p2[1]]
    j0 = max(int(np.ceil(min(xs) - 0.5)), 0)
    j1 = min(int(np.floor(max(xs) - 0.5)), width - 1)
    i0_ = max(int(np.ceil(min(ys) - 0.5)), 0)
    i1_ = min(int(np.floor(max(ys) - 0.5)), height - 1)
    if j1 < j0 or i1_ < i0_:
      continue
    jj, ii = np.meshgrid(np.arange(j0, j1 + 1), np.arange(i0_, i1_ + 1))
    rhs = np.stack([jj + 0.5 - p0[0], ii + 0.5 - p0[1]], axis=-1)
    uv = rhs @ np.linalg.inv(m).T
    l1, l2 = uv[..., 0], uv[..., 1]
    l0 = 1.0 - l1 - l2
    inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
    z = l0 * p0[2] + l1 * p1[2] + l2 * p2[2]
    win = inside & (z > depth[ii, jj])
    ii, jj = ii[win], jj[win]
    tri_id[ii, jj] = t
    depth[ii, jj] = z[win]
    bary[ii, jj] = np.stack([l0[win], l1[win], l2[win]], axis=-1)
  return tri_id, bary, depth
