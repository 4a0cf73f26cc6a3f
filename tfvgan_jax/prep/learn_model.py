"""A morphable model learned from Face Mesh landmark tracks: 468 vertices in MediaPipe's topology.

`learn_face_model(clips)` turns clips of tracked Face Mesh landmarks, one person per clip, into a
`face3d.MorphableModel` that needs no third-party model data:

  1. `to_model_space`: screen landmarks (x right, y down, z growing toward the camera, all in
     pixels) become model-space points (x to the viewer's right, y up, z toward the viewer).
  2. `generalized_procrustes`: every frame of every clip is aligned by a similarity (rotation,
     scale, translation) to a common reference, which is re-estimated as the mean of the aligned
     frames until it stops changing. Pose and distance to the camera are removed; what remains is
     shape: identity and expression. `tangent_projection` then rescales each aligned frame so
     that its component along the reference equals the reference: a similarity fit shrinks a
     shape by (1 + |d|^2 / |reference|^2) for a deviation d orthogonal to the reference, a
     quadratic effect that PCA would otherwise take for a further axis.
  3. `clip_neutrals`: a clip's neutral face is the per-coordinate median of its aligned frames,
     i.e. the face it shows most of the time. Talking-head clips are neutral or near it for most
     frames, and the median, unlike the mean, is not pulled by the minority of strong expressions.
     (No frame can be picked as "the neutral one" without a neutral face to compare with.)
  4. mean = the mean of the clip neutrals; identity axes = `principal_axes` of the neutrals around
     it (K_id <= clips - 1); expression axes = `principal_axes` of every aligned frame minus its
     clip's neutral, taken around zero (the neutral face has expression 0). Each axis is an
     eigenvector times sqrt(eigenvalue), so coefficients are in units of the population std (the
     root mean square, for expressions) and N(0, I) is their prior, as `face3d.model` requires.
  5. `canonical_frame`: the face is turned frontal (eye corners along +x, chin to forehead along
     +y, z out of the face), centred, and scaled so that the outer eye corners (iBUG 37 and 46,
     Face Mesh 33 and 263) are `OUTER_EYE_CORNER_DISTANCE` = 1.2 units apart, as in the procedural
     model (`face3d.procedural`), so camera scales fitted with either model are comparable.
  6. `facemesh_triangles`: a Delaunay triangulation of the frontal mean's (x, y) without the eye
     and mouth openings and the hull triangles outside the face oval, counter-clockwise seen from
     +z; landmarks are `topology.IBUG68_FROM_MESH`.

Alignment uses all 468 points, so an expression that moves many of them (an open jaw) shifts the
similarity a little; its expression axis absorbs the difference, as with any landmark-trained model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import spatial

from tfvgan_jax.face3d.converters import fit_similarity
from tfvgan_jax.face3d.io import validate_arrays
from tfvgan_jax.face3d.model import MorphableModel
from tfvgan_jax.prep import topology

NAME = "learned_facemesh468"
LICENCE = "derived from the user's own videos; MediaPipe Face Mesh topology (Apache-2.0)"
# The procedural model's distance between the outer eye corners, in model units.
OUTER_EYE_CORNER_DISTANCE = 1.2
# Face Mesh points on the midline: the top of the forehead and the bottom of the chin.
_FOREHEAD_TOP, _CHIN = 10, 152


def to_model_space(points) -> np.ndarray:
  """Screen landmarks [..., 468, 3] (x right, y down, z toward the camera) -> model space (y up).

  Negating y alone keeps the frame right-handed: x to the viewer's right, y up, z toward the viewer.
  """
  return np.asarray(points, np.float64) * np.array([1.0, -1.0, 1.0])


def _normalised(shape) -> np.ndarray:
  """`shape` [N, 3] centred on its centroid and scaled to unit root-mean-square radius."""
  centred = shape - shape.mean(axis=0)
  return centred / np.sqrt(np.square(centred).sum(axis=1).mean())


def _apply_similarity(shapes, scale, rotation, translation) -> np.ndarray:
  """scale * rotation @ p + translation for every point p of [..., N, 3] `shapes`."""
  return scale[..., None, None] * np.einsum("...ij,...nj->...ni", rotation, shapes) + translation[..., None, :]


def generalized_procrustes(shapes, max_iterations: int = 100, tolerance: float = 1e-10):
  """Generalized Procrustes alignment of [M, N, 3] shapes by similarities.

  The reference starts as the first shape and is then, each round, the mean of the shapes aligned
  to it (`fit_similarity`), centred and scaled to unit root-mean-square radius, until it moves by
  less than `tolerance` (root mean square per point) or `max_iterations` rounds have run.

  Returns:
    (aligned [M, N, 3], reference [N, 3]): each aligned shape is its shape's best similarity image
    on the reference, and the reference is the normalised mean of the aligned shapes.
  """
  shapes = np.asarray(shapes, np.float64)
  reference = _normalised(shapes[0])
  for _ in range(max_iterations):
    aligned = _apply_similarity(shapes, *fit_similarity(shapes, np.broadcast_to(reference, shapes.shape)))
    updated = _normalised(aligned.mean(axis=0))
    moved = np.sqrt(np.square(updated - reference).sum(axis=1).mean())
    reference = updated
    if moved < tolerance:
      break
  aligned = _apply_similarity(shapes, *fit_similarity(shapes, np.broadcast_to(reference, shapes.shape)))
  return aligned, reference


def tangent_projection(aligned, reference) -> np.ndarray:
  """Aligned shapes [M, N, 3] moved along their own ray onto the reference's tangent plane.

  Each shape x (centred, like the reference r) becomes x * |r|^2 / <x, r>, the point of the line
  through 0 and x whose projection on r is r itself. A shape r + d with d orthogonal to r, shrunk
  by any factor k, comes back as r + d: the deviations stay linear in d (Cootes et al., 1995).
  """
  aligned = np.asarray(aligned, np.float64)
  reference = np.asarray(reference, np.float64)
  along = np.einsum("mnc,nc->m", aligned, reference)
  return aligned * (np.square(reference).sum() / along)[:, None, None]


def clip_neutrals(aligned_clips: Sequence[np.ndarray]) -> np.ndarray:
  """[C, N, 3]: each clip's neutral face, the per-coordinate median of its [T, N, 3] aligned frames."""
  return np.stack([np.median(clip, axis=0) for clip in aligned_clips])


def principal_axes(deviations, count: int, degrees_of_freedom: int) -> np.ndarray:
  """The `count` leading principal axes of [M, D] deviations, each scaled by its std.

  With deviations = U S V^T, the second-moment matrix deviations^T deviations / dof has
  eigenvectors V and eigenvalues S^2 / dof; column k is V_k * S_k / sqrt(dof), i.e. eigenvector
  times sqrt(eigenvalue), so unit coefficients are one standard deviation along that axis.

  Returns:
    [D, count], axes in decreasing order of spread (zero columns past the deviations' rank).
  """
  deviations = np.asarray(deviations, np.float64)
  _, singular, vt = np.linalg.svd(deviations, full_matrices=False)
  axes = np.zeros((deviations.shape[1], count))
  kept = min(count, len(singular))
  axes[:, :kept] = vt[:kept].T * (singular[:kept] / np.sqrt(degrees_of_freedom))
  return axes


def canonical_frame(mean):
  """The similarity that makes the face `mean` [468, 3] frontal, centred and of standard size.

  Axes from landmarks: x from the right eye's outer corner (33) to the left one's (263); y from the
  chin (152) toward the top of the forehead (10), made orthogonal to x; z = x cross y, out of the
  face. The centroid goes to the origin and the outer eye corners end up
  `OUTER_EYE_CORNER_DISTANCE` apart.

  Returns:
    (scale, rotation [3, 3], translation [3]) to apply as scale * rotation @ p + translation.
  """
  mean = np.asarray(mean, np.float64)
  x_axis = mean[topology.LEFT_EYE_OUTER] - mean[topology.RIGHT_EYE_OUTER]
  eye_distance = np.linalg.norm(x_axis)
  x_axis = x_axis / eye_distance
  up = mean[_FOREHEAD_TOP] - mean[_CHIN]
  y_axis = up - up.dot(x_axis) * x_axis
  y_axis = y_axis / np.linalg.norm(y_axis)
  rotation = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)])
  scale = OUTER_EYE_CORNER_DISTANCE / eye_distance
  return scale, rotation, -scale * rotation @ mean.mean(axis=0)


def points_in_polygon(points, polygon) -> np.ndarray:
  """[P] bool: whether each of [P, 2] points lies inside the closed [V, 2] polygon (even-odd rule).

  A point is inside when a ray from it toward +x crosses the polygon's edges an odd number of times;
  an edge counts when its end points lie on opposite sides of the ray's line (one at or above it,
  one below), and the crossing's x is right of the point.
  """
  points = np.asarray(points, np.float64)
  start = np.asarray(polygon, np.float64)
  end = np.roll(start, -1, axis=0)
  px, py = points[:, None, 0], points[:, None, 1]
  straddles = (start[None, :, 1] > py) != (end[None, :, 1] > py)
  with np.errstate(divide="ignore", invalid="ignore"):
    crossing_x = start[:, 0] + (py - start[:, 1]) * (end[:, 0] - start[:, 0]) / (end[:, 1] - start[:, 1])
  return (straddles & (crossing_x > px)).sum(axis=1) % 2 == 1


def facemesh_triangles(mean) -> np.ndarray:
  """[F, 3] int32 triangles over the frontal Face Mesh shape `mean` [468, 3] (model space, y up).

  Delaunay of the (x, y) positions, less the triangles whose centroid lies inside an eye opening
  (`RIGHT_EYE_LOOP`, `LEFT_EYE_LOOP`) or the mouth opening (`INNER_LIPS_LOOP`), so that the eyes
  and an open mouth are holes, and less those whose centroid lies outside `FACE_OVAL_LOOP` (the
  convex hull's long thin triangles across the outline's concave stretches). Each triangle is
  wound counter-clockwise seen from +z.

  Raises:
    ValueError: a point is left in no triangle (coincident or outside the face oval).
  """
  xy = np.asarray(mean, np.float64)[:, :2]
  triangles = spatial.Delaunay(xy).simplices
  centroids = xy[triangles].mean(axis=1)
  keep = points_in_polygon(centroids, xy[topology.FACE_OVAL_LOOP])
  for loop in (topology.RIGHT_EYE_LOOP, topology.LEFT_EYE_LOOP, topology.INNER_LIPS_LOOP):
    keep &= ~points_in_polygon(centroids, xy[loop])
  triangles = triangles[keep]
  (ax, ay), (bx, by), (cx, cy) = (xy[triangles[:, i]].T for i in range(3))
  clockwise = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax) < 0
  triangles[clockwise] = triangles[clockwise][:, [0, 2, 1]]
  unused = np.setdiff1d(np.arange(len(xy)), triangles)
  if unused.size:
    raise ValueError(f"the learned mean face leaves Face Mesh points {unused.tolist()} in no triangle: they "
                     "coincide with others or lie outside the face oval")
  return triangles.astype(np.int32)


def _checked_clips(clips) -> list:
  """The clips as float64 arrays, after checking their shapes and values (errors name the clip)."""
  if isinstance(clips, np.ndarray) or len(clips) < 2:
    raise ValueError("learn_face_model needs a sequence of at least 2 clips (one person each), got "
                     f"{'one array' if isinstance(clips, np.ndarray) else len(clips)}")
  checked = []
  for index, clip in enumerate(clips):
    clip = np.asarray(clip)
    if clip.ndim != 3 or clip.shape[1:] != (topology.NUM_POINTS, 3) or clip.shape[0] < 1:
      raise ValueError(f"clip {index}: must be [T >= 1, {topology.NUM_POINTS}, 3] Face Mesh landmarks, "
                       f"got {list(clip.shape)}")
    if not np.all(np.isfinite(clip)):
      raise ValueError(f"clip {index}: contains NaN or Inf")
    checked.append(clip.astype(np.float64))
  return checked


def learn_face_model(
    clips: Sequence[np.ndarray],
    num_id: int = 40,
    num_exp: int = 10,
    name: str = NAME,
    licence: str = LICENCE,
    max_iterations: int = 100,
) -> MorphableModel:
  """Learns a 468-vertex morphable model from Face Mesh landmark clips (module docstring).

  Args:
    clips: C >= 2 arrays [T_c, 468, 3], each one person's tracked landmarks: x right, y down in
      pixels, z growing toward the camera in the same pixel scale (the Face Mesh wrapper's output).
    num_id: identity axes wanted; the model has min(num_id, C - 1).
    num_exp: expression axes wanted; the model has min(num_exp, total frames).
    name, licence: the model's metadata.
    max_iterations: rounds of generalized Procrustes alignment at most.

  Returns:
    A validated model: mean [468, 3], id_basis [468, 3, K_id], exp_basis [468, 3, K_exp], triangles
    from `facemesh_triangles`, landmarks `topology.IBUG68_FROM_MESH`.

  Raises:
    ValueError: fewer than 2 clips, a clip of the wrong shape or with non-finite values (the message
      names the clip's index), or num_id / num_exp below 1.
  """
  if num_id < 1 or num_exp < 1:
    raise ValueError(f"num_id and num_exp must be at least 1, got {num_id} and {num_exp}")
  clips = _checked_clips(clips)
  lengths = [len(clip) for clip in clips]
  aligned, reference = generalized_procrustes(to_model_space(np.concatenate(clips)), max_iterations)
  aligned = tangent_projection(aligned, reference)
  aligned_clips = np.split(aligned, np.cumsum(lengths)[:-1])
  neutrals = clip_neutrals(aligned_clips)
  mean = neutrals.mean(axis=0)
  n = topology.NUM_POINTS
  id_axes = principal_axes((neutrals - mean).reshape(len(clips), -1), min(num_id, len(clips) - 1), len(clips) - 1)
  residuals = np.concatenate([clip - neutral for clip, neutral in zip(aligned_clips, neutrals)]).reshape(len(aligned), -1)
  exp_axes = principal_axes(residuals, min(num_exp, len(aligned)), len(aligned))

  scale, rotation, translation = canonical_frame(mean)
  mean = _apply_similarity(mean, scale, rotation, translation)
  id_basis = scale * np.einsum("ij,njk->nik", rotation, id_axes.reshape(n, 3, -1))
  exp_basis = scale * np.einsum("ij,njk->nik", rotation, exp_axes.reshape(n, 3, -1))
  arrays = {
      "mean": mean.astype(np.float32),
      "id_basis": id_basis.astype(np.float32),
      "exp_basis": exp_basis.astype(np.float32),
      "triangles": facemesh_triangles(mean),
      "landmarks": np.asarray(topology.IBUG68_FROM_MESH, np.int32),
  }
  validate_arrays(arrays, f"<learned model {name!r}>")
  return MorphableModel(**arrays, name=name, licence=licence)
