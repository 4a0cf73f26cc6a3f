"""Face Mesh landmarks: regions of interest, the crop warp, the model on real faces, and the facts of
`topology` (loops and the 468 -> 68 map) checked on its results."""

import numpy as np
import pytest
from PIL import Image

from tfvgan_jax.prep import landmarks, topology
from tfvgan_jax.prep.landmarks import FaceMesh, RegionOfInterest
from tfvgan_jax.prep.detect import Detection
from helpers import TESTDATA_IMAGES, read_rgb


@pytest.fixture(scope="session")
def face_mesh(mediapipe_models):
  return FaceMesh(mediapipe_models.landmarks)


def rotation(angle):
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s], [s, c]])


def inside_polygon(points, polygon):
  """Even-odd rule by casting a ray toward +x from each point; [P] bool."""
  points, polygon = np.asarray(points, np.float64), np.asarray(polygon, np.float64)
  inside = np.zeros(len(points), bool)
  for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0)):
    crosses = (y0 > points[:, 1]) != (y1 > points[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
      x_at = x0 + (points[:, 1] - y0) * (x1 - x0) / (y1 - y0)
    inside ^= crosses & (points[:, 0] < x_at)
  return inside


# --- geometry without the model -------------------------------------------------------------------


def test_eye_line_rotation_sign():
  assert landmarks.eye_line_rotation([10, 50], [60, 50]) == 0.0
  # The subject's left eye (image right) lower on screen: the face is turned clockwise, angle > 0.
  np.testing.assert_allclose(landmarks.eye_line_rotation([10, 50], [60, 100]), np.pi / 4)
  np.testing.assert_allclose(landmarks.eye_line_rotation([10, 50], [60, 0]), -np.pi / 4)


def test_roi_from_detection_hand_case():
  detection = Detection(np.array([10, 20, 110, 100], np.float32),
                        np.array([[30, 40], [70, 80]] + [[0, 0]] * 4, np.float32), 0.9)
  roi = landmarks.roi_from_detection(detection)
  np.testing.assert_allclose(roi.center, [60, 60])
  np.testing.assert_allclose(roi.size, 150)  # 1.5 x the longer side (100)
  np.testing.assert_allclose(roi.rotation, np.pi / 4)


def test_roi_from_landmarks_hand_points():
  rng = np.random.default_rng(0)
  angle, center = 0.4, np.array([200.0, 150.0])
  # Points in the face's own upright frame: a 80 x 90 box spanning x -40..40, y -30..60.
  upright = np.column_stack([rng.uniform(-40, 40, 468), rng.uniform(-30, 60, 468)])
  upright[:4] = [[-40, -30], [40, -30], [-40, 60], [40, 60]]
  upright[topology.RIGHT_EYE_OUTER] = [-20, 0]
  upright[topology.LEFT_EYE_OUTER] = [20, 0]
  points = center + upright @ rotation(angle).T
  roi = landmarks.roi_from_landmarks(np.column_stack([points, rng.normal(size=468)]))
  np.testing.assert_allclose(roi.rotation, angle)
  np.testing.assert_allclose(roi.size, 1.5 * 90)
  np.testing.assert_allclose(roi.center, center + rotation(angle) @ [0, 15], atol=1e-4)
  with pytest.raises(ValueError, match="roi_from_landmarks"):
    landmarks.roi_from_landmarks(points[:68])


def test_crop_transform_round_trip_and_rotation_sign():
  roi = RegionOfInterest(np.array([120.0, 80.0], np.float32), 60.0, 0.3)
  forward = landmarks.crop_transform(roi, 192)
  backward = landmarks.crop_transform(roi, 192, inverse=True)
  compose = forward[:, :2] @ backward
  compose[:, 2] += forward[:, 2]
  np.testing.assert_allclose(compose, np.eye(2, 3), atol=1e-12)
  # The crop's right-edge midpoint is the image point half a side along (cos, sin) of the rotation.
  edge = backward[:, :2] @ [192, 96] + backward[:, 2]
  np.testing.assert_allclose(edge, roi.center + 30 * np.array([np.cos(0.3), np.sin(0.3)]), atol=1e-9)
  np.testing.assert_allclose(forward[:, :2] @ roi.center + forward[:, 2], [96, 96], atol=1e-9)


def bilinear_reference(image, x, y):
  """Bilinear sample of `image` [H, W, C] at continuous (x, y), pixel centres at +0.5, clamped."""
  h, w = image.shape[:2]
  u, v = np.clip(x - 0.5, 0, w - 1), np.clip(y - 0.5, 0, h - 1)
  u0, v0 = np.minimum(np.floor(u).astype(int), w - 2), np.minimum(np.floor(v).astype(int), h - 2)
  fu, fv = (u - u0)[..., None], (v - v0)[..., None]
  image = image.astype(np.float64)
  top = image[v0, u0] * (1 - fu) + image[v0, u0 + 1] * fu
  bottom = image[v0 + 1, u0] * (1 - fu) + image[v0 + 1, u0 + 1] * fu
  return top * (1 - fv) + bottom * fv


def test_crop_image_matches_numpy_bilinear():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
  roi = RegionOfInterest(np.array([61.0, 47.0], np.float32), 50.0, -0.7)
  crop = landmarks.crop_image(image, roi, 32)
  to_image = landmarks.crop_transform(roi, 32, inverse=True)
  cols, rows = np.meshgrid(np.arange(32) + 0.5, np.arange(32) + 0.5)
  x = to_image[0, 0] * cols + to_image[0, 1] * rows + to_image[0, 2]
  y = to_image[1, 0] * cols + to_image[1, 1] * rows + to_image[1, 2]
  np.testing.assert_allclose(crop, bilinear_reference(image, x, y), atol=1.01)


def test_crop_levels_a_rotated_pattern():
  # Two bright dots on a line turned by 0.5 rad: the crop of that rotation shows them level.
  angle, center = 0.5, np.array([100.0, 90.0])
  image = np.zeros((200, 220, 3), np.uint8)
  dots = [center + rotation(angle) @ [-30, 0], center + rotation(angle) @ [30, 10]]
  for x, y in dots:
    image[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = 255
  crop = landmarks.crop_image(image, RegionOfInterest(center, 100.0, angle), 100)
  rows, cols = np.nonzero(crop[..., 0] > 60)
  left, right = cols < 50, cols >= 50
  # Each dot's integer-pixel footprint has its centre 0.5 off the exact point; allow for it.
  np.testing.assert_allclose([cols[left].mean(), rows[left].mean()], [20, 50], atol=1.0)
  np.testing.assert_allclose([cols[right].mean(), rows[right].mean()], [80, 60], atol=1.0)


# --- topology facts -----------------------------------------------------------------------------


def test_topology_arrays_are_well_formed():
  loops = (topology.RIGHT_EYE_LOOP, topology.LEFT_EYE_LOOP, topology.INNER_LIPS_LOOP,
           topology.OUTER_LIPS_LOOP, topology.FACE_OVAL_LOOP)
  for array in loops + (topology.IBUG68_FROM_MESH,):
    assert array.dtype == np.int32 and not array.flags.writeable
    assert len(set(array.tolist())) == len(array)
    assert array.min() >= 0 and array.max() < topology.NUM_POINTS
  assert topology.IBUG68_FROM_MESH.shape == (68,)
  mirror = topology.MIRROR_68
  assert np.array_equal(mirror[mirror], np.arange(68))
  np.testing.assert_array_equal(np.nonzero(mirror == np.arange(68))[0],
                                [8, 27, 28, 29, 30, 33, 51, 57, 62, 66])
  for corner in (topology.RIGHT_EYE_OUTER, topology.RIGHT_EYE_INNER):
    assert corner in topology.RIGHT_EYE_LOOP
  for corner in (topology.LEFT_EYE_OUTER, topology.LEFT_EYE_INNER):
    assert corner in topology.LEFT_EYE_LOOP
  assert topology.IBUG68_FROM_MESH[36] == topology.RIGHT_EYE_OUTER
  assert topology.IBUG68_FROM_MESH[45] == topology.LEFT_EYE_OUTER


def levelled(points):
  """Points turned so that the outer eye corners are level, origin between them; [N, 2]."""
  right, left = points[topology.RIGHT_EYE_OUTER, :2], points[topology.LEFT_EYE_OUTER, :2]
  angle = landmarks.eye_line_rotation(right, left)
  return (points[:, :2] - (right + left) / 2) @ rotation(angle)


def check_mesh_on_face(image, detection, result):
  points = result.points
  assert points.shape == (468, 3) and points.dtype == np.float32
  assert result.score > 0.5
  x0, y0, x1, y1 = detection.box
  margin = 0.25 * (x1 - x0)  # the mesh reaches the hairline, above the detector's box
  assert np.all((points[:, :2] > [x0 - margin, y0 - margin]) & (points[:, :2] < [x1 + margin,
                                                                                  y1 + margin]))
  flat = levelled(points)
  eyes = flat[np.concatenate([topology.RIGHT_EYE_LOOP, topology.LEFT_EYE_LOOP])]
  mouth = flat[np.concatenate([topology.INNER_LIPS_LOOP, topology.OUTER_LIPS_LOOP])]
  assert eyes[:, 1].max() < mouth[:, 1].min()  # y down: eyes above the mouth
  # The detector's eye keypoints lie in the eye openings: its coarse keypoints are up to a quarter
  # of an eye's width off the centre (and smiling eyes are narrow), so the opening is enlarged
  # twice about its centre.
  for keypoint, loop in zip(detection.keypoints[:2], (topology.RIGHT_EYE_LOOP,
                                                      topology.LEFT_EYE_LOOP)):
    opening = points[loop, :2]
    centre = opening.mean(axis=0)
    assert inside_polygon(centre[None], opening).all()
    assert inside_polygon(keypoint[None], centre + 2.0 * (opening - centre)).all()
  # The mouth opening lies inside the outer lips.
  assert inside_polygon(points[topology.INNER_LIPS_LOOP, :2],
                        points[topology.OUTER_LIPS_LOOP, :2]).mean() > 0.8
  # Most landmarks are within the face oval (on a turned head the nose and the far cheek stick out).
  assert inside_polygon(points[:, :2], points[topology.FACE_OVAL_LOOP, :2]).mean() > 0.85
  # Depth grows toward the camera: the nose tip is nearer than the face's outline.
  assert points[topology.NOSE_TIP, 2] > points[topology.FACE_OVAL_LOOP, 2].max()
  check_ibug68(landmarks.ibug68(points))


def check_ibug68(points68):
  angle = landmarks.eye_line_rotation(points68[36], points68[45])
  x, y = ((points68[:, :2] - (points68[36, :2] + points68[45, :2]) / 2) @ rotation(angle)).T
  # The jaw runs left to right across the lower face (its upper ends may bow out on either side).
  assert np.all(np.diff(x[2:15]) > 0) and x[0] < x[8] < x[16]
  assert y[8] > np.r_[y[0:5], y[12:17]].max()  # the chin is below the sides of the jaw
  assert y[0:17].min() > min(y[36:48].min(), y[17:27].max())  # below the brows
  assert np.all(np.diff(x[17:22]) > 0) and np.all(np.diff(x[22:27]) > 0)
  assert np.all(np.diff(y[27:31]) > 0)  # the nose ridge runs down to the tip
  assert np.all(np.diff(x[31:36]) > 0)
  assert x[36] < x[39] < x[42] < x[45]
  assert y[37] < y[41] and y[38] < y[40] and y[43] < y[47] and y[44] < y[46]  # lids
  assert x[48] < x[51] < x[54] and y[51] < y[62] <= y[66] < y[57]
  assert x[60] < x[62] < x[64]
  assert y[17:27].max() < y[36:48].min() < y[27:36].max() < y[48:68].min()


def test_mesh_on_the_astronaut(face_detector, face_mesh, astronaut):  # noqa: F811
  (detection,) = face_detector(astronaut)
  first = face_mesh(astronaut, landmarks.roi_from_detection(detection))
  check_mesh_on_face(astronaut, detection, first)
  # Tracking: the region from this frame's landmarks gives nearly the same landmarks again.
  again = face_mesh(astronaut, landmarks.roi_from_landmarks(first.points))
  check_mesh_on_face(astronaut, detection, again)
  eye_distance = np.linalg.norm(first.points[topology.LEFT_EYE_OUTER, :2]
                                - first.points[topology.RIGHT_EYE_OUTER, :2])
  assert np.median(np.linalg.norm(first.points - again.points, axis=1)) < 0.05 * eye_distance
  # A frontal face: each iBUG point and its mirror image are at the same height, opposite sides.
  flat = landmarks.ibug68(levelled(again.points))
  flat -= flat[[27, 28, 29, 30, 33, 51, 57, 62, 66, 8]].mean(axis=0)
  mirrored = flat[topology.MIRROR_68]
  assert np.abs(flat[:, 1] - mirrored[:, 1]).max() < 0.03 * eye_distance
  assert np.abs(flat[:, 0] + mirrored[:, 0]).max() < 0.1 * eye_distance


@pytest.mark.parametrize("name", TESTDATA_IMAGES)
def test_mesh_on_testdata_images(face_detector, face_mesh, testdata, name):  # noqa: F811
  image = read_rgb(testdata / "images" / name)
  (detection,) = face_detector(image)
  result = face_mesh(image, landmarks.roi_from_detection(detection))
  check_mesh_on_face(image, detection, result)
  check_mesh_on_face(image, detection, face_mesh(image, landmarks.roi_from_landmarks(result.points)))


def test_mesh_follows_a_rotated_face(face_detector, face_mesh, astronaut):  # noqa: F811
  # Turn the whole picture by 25 degrees (clockwise on screen): the landmarks turn with it.
  angle = np.deg2rad(25)
  reference = face_mesh(astronaut, landmarks.roi_from_detection(face_detector(astronaut)[0]))
  center = np.array([256.0, 256.0])
  turn = rotation(angle)
  source_of = np.linalg.inv(turn)  # output pixel -> source pixel
  offset = center - source_of @ center
  turned = np.asarray(Image.fromarray(astronaut).transform(
      (512, 512), Image.AFFINE, tuple(np.concatenate([source_of, offset[:, None]], 1).ravel()),
      resample=Image.BILINEAR))
  (detection,) = face_detector(turned)
  roi = landmarks.roi_from_detection(detection)
  reference_roll = landmarks.eye_line_rotation(reference.points[topology.RIGHT_EYE_OUTER],
                                               reference.points[topology.LEFT_EYE_OUTER])
  assert abs(roi.rotation - (angle + reference_roll)) < 0.15
  result = face_mesh(turned, roi)
  expected = (reference.points[:, :2] - center) @ turn.T + center
  eye_distance = np.linalg.norm(reference.points[topology.LEFT_EYE_OUTER, :2]
                                - reference.points[topology.RIGHT_EYE_OUTER, :2])
  assert np.median(np.linalg.norm(result.points[:, :2] - expected, axis=1)) < 0.05 * eye_distance


def test_facemesh_rejects_a_detector_model(mediapipe_models):
  with pytest.raises(ValueError, match="Face Mesh model"):
    FaceMesh(mediapipe_models.detector)
  assert landmarks.ibug68(np.zeros((478, 3))).shape == (68, 3)
