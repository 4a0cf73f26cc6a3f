"""Face detection (anchors, decoding, weighted NMS, letterboxing, the model on real faces) and the
model files (wheel extraction, lookup, the fetch CLI)."""

import hashlib
import os
import zipfile

import numpy as np
import pytest
from helpers import TESTDATA_IMAGES, read_rgb

from tfvgan_jax.prep import detect, model_files
from tfvgan_jax.prep.detect import FaceDetector

# --- anchors, decoding, NMS ---------------------------------------------------------------------


def test_ssd_anchors_grid_positions():
  anchors = detect.ssd_anchors()
  assert anchors.shape == (896, 2) and anchors.dtype == np.float32
  # Stride 8: 16 x 16 cells, 2 anchors each, row-major; centre of cell (row, col) at (col+.5)/16.
  np.testing.assert_allclose(anchors[0], [1 / 32, 1 / 32])
  np.testing.assert_allclose(anchors[1], [1 / 32, 1 / 32])
  np.testing.assert_allclose(anchors[2], [3 / 32, 1 / 32])
  np.testing.assert_allclose(anchors[2 * 16], [1 / 32, 3 / 32])  # second row
  np.testing.assert_allclose(anchors[511], [31 / 32, 31 / 32])
  # Strides 16, 16, 16 share an 8 x 8 grid with 6 anchors per cell.
  np.testing.assert_allclose(anchors[512:518], np.tile([1 / 16, 1 / 16], (6, 1)))
  np.testing.assert_allclose(anchors[518], [3 / 16, 1 / 16])
  np.testing.assert_allclose(anchors[-1], [15 / 16, 15 / 16])
  # Every cell of each grid is used equally often.
  fine, coarse = anchors[:512] * 16 - 0.5, anchors[512:] * 8 - 0.5
  assert np.bincount((fine[:, 1] * 16 + fine[:, 0]).round().astype(int)).tolist() == [2] * 256
  assert np.bincount((coarse[:, 1] * 8 + coarse[:, 0]).round().astype(int)).tolist() == [6] * 64


def test_decode_boxes_hand_made():
  anchors = np.array([[0.5, 0.25]], np.float32)
  raw = np.zeros((1, 16), np.float32)
  raw[0, :4] = [12.8, -6.4, 32.0, 64.0]  # centre offset (0.1, -0.05), size (0.25, 0.5)
  raw[0, 4:6] = [6.4, 12.8]  # first keypoint offset (0.05, 0.1)
  raw[0, 14:16] = [-64.0, 0.0]  # last keypoint offset (-0.5, 0)
  boxes, keypoints = detect.decode_boxes(raw, anchors)
  np.testing.assert_allclose(boxes[0], [0.475, -0.05, 0.725, 0.45], atol=1e-6)
  np.testing.assert_allclose(keypoints[0, 0], [0.55, 0.35], atol=1e-6)
  np.testing.assert_allclose(keypoints[0, 1:5], np.tile([0.5, 0.25], (4, 1)), atol=1e-6)
  np.testing.assert_allclose(keypoints[0, 5], [0.0, 0.25], atol=1e-6)
  with pytest.raises(ValueError, match="decode_boxes"):
    detect.decode_boxes(raw[:, :12], anchors)


def test_sigmoid_is_stable_and_exact():
  logits = np.array([-100.0, -3.0, 0.0, 2.5, 100.0], np.float32)
  with np.errstate(all="raise"):
    values = detect.sigmoid(logits)
  np.testing.assert_allclose(values, 1.0 / (1.0 + np.exp(-logits.astype(np.float64))), atol=1e-7)


def brute_force_weighted_nms(boxes, scores, keypoints, threshold):
  """Pairwise loops: visit best first, merge everything overlapping the best one by score weight."""
  def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0

  pool = sorted(range(len(scores)), key=lambda i: -scores[i])
  merged = []
  while pool:
    best = pool[0]
    cluster = [i for i in pool if iou(boxes[best], boxes[i]) > threshold]
    total = sum(scores[i] for i in cluster)
    box = sum(scores[i] * boxes[i].astype(np.float64) for i in cluster) / total
    points = sum(scores[i] * keypoints[i].astype(np.float64) for i in cluster) / total
    merged.append((box, scores[best], points))
    pool = [i for i in pool if i not in cluster]
  return merged


def test_weighted_nms_matches_brute_force():
  rng = np.random.default_rng(3)
  centres = rng.uniform(0.2, 0.8, (4, 2))
  boxes, keypoints = [], []
  for _ in range(40):
    centre = centres[rng.integers(4)] + rng.normal(0, 0.03, 2)
    half = rng.uniform(0.05, 0.12, 2)
    boxes.append(np.concatenate([centre - half, centre + half]))
    keypoints.append(centre + rng.normal(0, 0.05, (6, 2)))
  boxes = np.asarray(boxes, np.float32)
  keypoints = np.asarray(keypoints, np.float32)
  scores = rng.uniform(0.5, 1.0, 40).astype(np.float32)
  got_boxes, got_scores, got_points = detect.non_max_suppression(boxes, scores, 0.3, keypoints)
  expected = brute_force_weighted_nms(boxes, scores, keypoints, 0.3)
  assert len(got_scores) == len(expected) > 1
  for box, score, points, (want_box, want_score, want_points) in zip(
      got_boxes, got_scores, got_points, expected):
    np.testing.assert_allclose(box, want_box, atol=1e-5)
    np.testing.assert_allclose(score, want_score)
    np.testing.assert_allclose(points, want_points, atol=1e-5)
  assert list(got_scores) == sorted(got_scores, reverse=True)
  limited = detect.non_max_suppression(boxes, scores, 0.3, keypoints, max_detections=1)
  np.testing.assert_allclose(limited[0], got_boxes[:1])


def test_weighted_nms_hand_case():
  boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
  scores = np.array([0.6, 0.9, 0.8], np.float32)
  merged, merged_scores, none = detect.non_max_suppression(boxes, scores, 0.3)
  assert none is None
  np.testing.assert_allclose(merged_scores, [0.9, 0.8])
  # The two overlapping boxes (IoU 9/11) merge with weights 0.9 / 1.5 and 0.6 / 1.5.
  np.testing.assert_allclose(merged[0], [0.6, 0, 10.6, 10], atol=1e-5)
  np.testing.assert_allclose(merged[1], boxes[2])
  empty = detect.non_max_suppression(np.zeros((0, 4)), np.zeros(0), 0.3)
  assert empty[0].shape == (0, 4) and empty[1].shape == (0,)


def test_letterbox_places_and_maps_back():
  image = np.zeros((60, 200, 3), np.uint8)
  image[20:40, 100:140] = 255  # a white block, x 100-140, y 20-40
  square, placement = detect.letterbox(image, 128)
  assert square.shape == (128, 128, 3)
  np.testing.assert_allclose(placement.scale, [128 / 200, 38 / 60], rtol=1e-6)  # 60*0.64 -> 38
  np.testing.assert_allclose(placement.offset, [0, 45])
  rows, cols = np.nonzero(square[..., 0] > 127)
  corners = (np.array([[100, 20], [140, 40]]) * placement.scale + placement.offset)
  np.testing.assert_allclose([cols.min(), rows.min()], corners[0], atol=1.0)
  np.testing.assert_allclose([cols.max() + 1, rows.max() + 1], corners[1], atol=1.0)
  assert square[:44].max() == 0 and square[84:].max() == 0  # black bars above and below


# --- the detector on real faces ------------------------------------------------------------------


def check_face_keypoints(detection):
  right_eye, left_eye, nose, mouth = detection.keypoints[:4]
  assert right_eye[0] < left_eye[0]  # the subject's right eye is on the image's left
  assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
  x0, y0, x1, y1 = detection.box
  assert np.all((detection.keypoints[:4] > [x0, y0]) & (detection.keypoints[:4] < [x1, y1]))


def test_detector_finds_the_astronaut(face_detector, astronaut):
  detections = face_detector(astronaut)
  assert len(detections) == 1
  face = detections[0]
  assert face.box.dtype == np.float32 and face.keypoints.shape == (6, 2)
  assert face.score > 0.8
  # The face (hairline to chin, ear to ear) spans about x 175-275, y 75-180 of the 512 x 512 image.
  np.testing.assert_allclose(face.box, [177, 81, 272, 175], atol=8)
  check_face_keypoints(face)


@pytest.mark.parametrize("name", TESTDATA_IMAGES)
def test_detector_on_testdata_images(face_detector, testdata, name):
  image = read_rgb(testdata / "images" / name)
  detections = face_detector(image)
  assert len(detections) == 1
  assert detections[0].score > 0.7
  check_face_keypoints(detections[0])


def test_detector_letterboxes_non_square_frames(face_detector, astronaut):
  portrait = astronaut[20:260, 110:350]  # 240 x 240 around the face, inside the model's range
  reference = face_detector(portrait)[0]
  for shape, offset in (((240, 400), (100, 0)), ((420, 240), (0, 120))):
    frame = np.full(shape + (3,), 90, np.uint8)
    frame[offset[1]:offset[1] + 240, offset[0]:offset[0] + 240] = portrait
    (face,) = face_detector(frame)
    # The frame is seen at a coarser scale, so allow a few of its input pixels of model noise.
    tolerance = 3 * max(shape) / detect.INPUT_SIZE
    np.testing.assert_allclose(face.box - np.tile(offset, 2), reference.box, atol=tolerance)
    np.testing.assert_allclose(face.keypoints - offset, reference.keypoints, atol=tolerance)


def test_detector_rejects_bad_inputs(face_detector, mediapipe_models):
  assert face_detector(np.zeros((64, 64, 3), np.uint8)) == []
  with pytest.raises(ValueError, match="FaceDetector"):
    face_detector(np.zeros((64, 64, 3), np.float32))
  with pytest.raises(ValueError, match="short-range face detector"):
    FaceDetector(mediapipe_models.landmarks)


# --- model files ----------------------------------------------------------------------------------


def write_zip(path, members):
  with zipfile.ZipFile(path, "w") as archive:
    for name, data in members.items():
      archive.writestr(name, data)
  return path


FAKE = {model_files.DETECTOR_FILE: b"detector bytes", model_files.LANDMARK_FILE: b"landmark bytes"}


def test_extract_from_wheel_rejects_a_wrong_hash(tmp_path):
  wheel = write_zip(tmp_path / "mediapipe.whl", FAKE)
  with pytest.raises(model_files.ModelFilesError, match="mediapipe.whl.*face_detection_short_range"):
    model_files.extract_from_wheel(wheel, tmp_path / "out")
  assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_extract_from_wheel_names_a_missing_member(tmp_path):
  wheel = write_zip(tmp_path / "mediapipe.whl", {model_files.DETECTOR_FILE: b"only one"})
  with pytest.raises(model_files.ModelFilesError,
                     match=r"mediapipe.whl: has no member .*face_landmark/face_landmark.tflite"):
    model_files.extract_from_wheel(wheel, tmp_path / "out")
  not_a_zip = tmp_path / "broken.whl"
  not_a_zip.write_bytes(b"not a zip")
  with pytest.raises(model_files.ModelFilesError, match="broken.whl: not a zip"):
    model_files.extract_from_wheel(not_a_zip, tmp_path / "out")


def patch_expected_hashes(monkeypatch):
  monkeypatch.setattr(model_files, "DETECTOR_SHA256",
                      hashlib.sha256(FAKE[model_files.DETECTOR_FILE]).hexdigest())
  monkeypatch.setattr(model_files, "LANDMARK_SHA256",
                      hashlib.sha256(FAKE[model_files.LANDMARK_FILE]).hexdigest())


def test_extract_from_wheel_writes_both_files(tmp_path, monkeypatch):
  patch_expected_hashes(monkeypatch)
  wheel = write_zip(tmp_path / "mediapipe.whl", {**FAKE, "mediapipe/other.py": b"ignored"})
  paths = model_files.extract_from_wheel(wheel, tmp_path / "out")
  assert paths == model_files.ModelPaths(str(tmp_path / "out" / "face_detection_short_range.tflite"),
                                         str(tmp_path / "out" / "face_landmark.tflite"))
  assert open(paths.detector, "rb").read() == FAKE[model_files.DETECTOR_FILE]
  assert model_files.sha256_of(paths.landmarks) == model_files.LANDMARK_SHA256
  assert sorted(os.listdir(tmp_path / "out")) == ["face_detection_short_range.tflite",
                                                  "face_landmark.tflite"]


def test_find_models_order_and_error(tmp_path, monkeypatch):
  monkeypatch.setenv("TFVGAN_MODELS", str(tmp_path / "cache"))
  assert model_files.models_dir() == str(tmp_path / "cache")
  with pytest.raises(model_files.ModelFilesError) as error:
    model_files.find_models()
  message = str(error.value)
  assert str(tmp_path / "cache" / "face_detection_short_range.tflite") in message
  assert "python -m data_prep.models fetch" in message
  explicit = tmp_path / "mine.tflite"
  explicit.write_bytes(b"x")
  with pytest.raises(model_files.ModelFilesError, match="landmarks model file not found"):
    model_files.find_models(detector=explicit)
  assert model_files.find_models(detector=explicit, landmarks=explicit) == (str(explicit),) * 2
  monkeypatch.delenv("TFVGAN_MODELS")
  assert model_files.models_dir() == os.path.expanduser("~/.cache/tfvgan_jax/models")


def test_find_models_unpacks_a_task_bundle_once(tmp_path, monkeypatch):
  monkeypatch.setenv("TFVGAN_MODELS", str(tmp_path / "cache"))
  task = write_zip(tmp_path / "face_landmarker.task", {
      "face_detector.tflite": b"d", "face_landmarks_detector.tflite": b"l",
      "face_blendshapes.tflite": b"b"})
  paths = model_files.find_models(task=task)
  assert open(paths.detector, "rb").read() == b"d" and open(paths.landmarks, "rb").read() == b"l"
  assert paths.detector.startswith(str(tmp_path / "cache"))
  stamp = os.stat(paths.landmarks).st_mtime_ns
  assert model_files.find_models(task=task) == paths
  assert os.stat(paths.landmarks).st_mtime_ns == stamp
  other = tmp_path / "other.tflite"
  other.write_bytes(b"o")
  assert model_files.find_models(landmarks=other, task=task).landmarks == str(other)


def test_models_cli_path_and_fetch_from_a_wheel(tmp_path, monkeypatch, capsys):
  from data_prep import models  # noqa: PLC0415
  monkeypatch.setenv("TFVGAN_MODELS", str(tmp_path / "cache"))
  assert models.main(["path"]) == 1
  assert "missing" in capsys.readouterr().out
  patch_expected_hashes(monkeypatch)
  wheel = write_zip(tmp_path / "mediapipe.whl", FAKE)
  assert models.main(["fetch", f"--wheel={wheel}"]) == 0
  assert model_files.LANDMARK_SHA256 in capsys.readouterr().out
  assert models.main(["path"]) == 0
  monkeypatch.setattr(model_files, "DETECTOR_SHA256", "0" * 64)
  assert models.main(["fetch", f"--wheel={wheel}", f"--dir={tmp_path / 'elsewhere'}"]) == 1
  assert "expected " + "0" * 64 in capsys.readouterr().err


def test_sha256_of_matches_hashlib(tmp_path):
  data = os.urandom(3 << 20)
  (tmp_path / "blob").write_bytes(data)
  assert model_files.sha256_of(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


def test_extract_from_wheel_takes_the_optional_models_it_holds(tmp_path, monkeypatch):
  patch_expected_hashes(monkeypatch)
  palm = b"palm bytes"
  monkeypatch.setitem(model_files.OPTIONAL_MODELS, model_files.PALM_DETECTOR_FILE, hashlib.sha256(palm).hexdigest())
  wheel = write_zip(tmp_path / "mediapipe.whl", {**FAKE, model_files.PALM_DETECTOR_FILE: palm})
  model_files.extract_from_wheel(wheel, tmp_path / "out")
  assert (tmp_path / "out" / "palm_detection_full.tflite").read_bytes() == palm
  assert not (tmp_path / "out" / "hand_landmark_full.tflite").exists()
  assert model_files.optional_model(model_files.PALM_DETECTOR_FILE, tmp_path / "out" / "palm_detection_full.tflite")
  assert model_files.optional_model(model_files.HAND_LANDMARK_FILE, tmp_path / "out" / "none.tflite") is None
  wrong = write_zip(tmp_path / "wrong.whl", {**FAKE, model_files.PALM_DETECTOR_FILE: b"other"})
  with pytest.raises(model_files.ModelFilesError, match="palm_detection_full.tflite' has sha256"):
    model_files.extract_from_wheel(wrong, tmp_path / "out2")


def test_the_full_range_detector_finds_a_small_face_the_short_range_one_misses(testdata, face_detector):
  path = model_files.optional_model(model_files.FULL_RANGE_DETECTOR_FILE)
  if path is None:
    pytest.skip(f"the full-range face detector is not fetched ({model_files.FETCH_COMMAND})")
  from PIL import Image

  from tfvgan_jax.prep import video
  full = detect.FaceDetector(path, score_threshold=0.6)
  assert full.input_size == 192
  # A shared clip's first frame shrunk to 160 px in a 960 x 540 frame: a face about 60 px wide.
  clip = next(video.read_frames(testdata / "videos" / "d18.mp4")).image
  frame = np.full((540, 960, 3), 90, np.uint8)
  frame[200:360, 600:760] = np.asarray(Image.fromarray(clip).resize((160, 160)))
  assert face_detector(frame) == []
  (found,) = full(frame)
  centre = (found.box[:2] + found.box[2:]) / 2
  assert 600 < centre[0] < 760 and 200 < centre[1] < 360
  both = detect.CombinedDetector([face_detector, full])
  assert len(both(frame)) == 1 and len(both(clip)) == 1
