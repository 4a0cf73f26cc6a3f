"""Small test meshes in screen space, built directly (no morphable model needed)."""

import numpy as np


def grid_mesh(rows, cols, x_range, y_range, z=0.0, jitter=0.0, seed=0):
  """A triangulated grid [rows x cols vertices] in screen space with optional jitter; returns verts, tris."""
  rng = np.random.default_rng(seed)
  xs, ys = np.meshgrid(np.linspace(*x_range, cols), np.linspace(*y_range, rows))
  zs = np.broadcast_to(np.asarray(z, np.float64), xs.shape) if np.ndim(z) < 2 else z
  verts = np.stack([xs, ys, zs], -1).reshape(-1, 3)
  verts[:, :2] += rng.uniform(-jitter, jitter, size=(len(verts), 2))
  idx = np.arange(rows * cols).reshape(rows, cols)
  a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
  tris = np.concatenate([np.stack([a, b, c], -1), np.stack([b, d, c], -1)])
  return verts.astype(np.float32), tris.astype(np.int32)


def merge(*meshes):
  """Concatenates (verts, tris) meshes into one."""
  verts, tris, offset = [], [], 0
  for v, t in meshes:
    verts.append(v)
    tris.append(t + offset)
    offset += len(v)
  return np.concatenate(verts).astype(np.float32), np.concatenate(tris).astype(np.int32)


def dome(rows, size, height=None):
  """A bulging height field over most of a size x size image (about 2 (rows-1)^2 triangles)."""
  u, v = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, rows))
  z = np.sqrt(np.clip(1.5 - u ** 2 - v ** 2, 0, None)) * 0.4 * size
  verts, tris = grid_mesh(rows, rows, (0.08 * size, 0.92 * size), (0.05 * size, 0.95 * size), z=z)
  return verts, tris
