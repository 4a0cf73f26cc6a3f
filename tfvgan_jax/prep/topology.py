"""Facts of MediaPipe's 468-point Face Mesh topology, as int32 index arrays.

Left and right are the SUBJECT's: the right eye is the one on the image's left in a frontal,
unmirrored photo. Every array holds indices into the [468, k] landmark array of
`tfvgan_jax.prep.landmarks.FaceMesh` (the 478-point model of `face_landmarker.task` shares these
first 468 points; its extra ten are the irises).

Loops are closed polygons listed once around (the first point is not repeated at the end):

  RIGHT_EYE_LOOP, LEFT_EYE_LOOP   the lid margins, i.e. the outline of the eye opening, from the
                                  outer corner along the lower lid to the inner corner and back
                                  along the upper lid
  INNER_LIPS_LOOP                 the mouth opening, from the right corner along the lower lip
  OUTER_LIPS_LOOP                 the lips' outer border, same order
  FACE_OVAL_LOOP                  the face outline, from the top of the forehead down the subject's
                                  left side (the image's right), through the chin and back up

`IBUG68_FROM_MESH` picks, for each of the 68 iBUG / 300-W points in their usual order, the Face
Mesh point that sits where that landmark is annotated:

  0-16   jaw line from the subject's right ear to the left one (image left to right), 8 = chin
  17-21  right brow, outer end to inner;  22-26 left brow, inner end to outer
  27-30  nose ridge, top to tip;  31-35 nose base, image left to right, 33 = under the tip
  36-41  right eye: outer corner, two upper-lid points, inner corner, two lower-lid points
  42-47  left eye: inner corner, two upper-lid points, outer corner, two lower-lid points
  48-59  outer lips: right corner, upper lip to the left corner, lower lip back
  60-67  inner lips: right corner, upper lip to the left corner, lower lip back

Where iBUG points are spaced evenly along a contour and the mesh has more points than needed, the
mesh point nearest the even spacing was taken, measured along the contours of Face Mesh results on
real frontal faces: the jaw from 127 (at the height of the eye corners) to the chin 152 in eighths,
the lower lip in thirds from corner to centre, the inner lips and the upper lip's 49 / 53 at half
way; 50 / 52 are the peaks of the Cupid's bow, 30 the nose point nearest the camera (4, not 1).
The jaw sits on the mesh's face oval, which on a turned head runs slightly inside the silhouette.
The map is mirror-symmetric: `MIRROR_68` pairs each iBUG point with its mirror image, and the
mapped mesh points are mirror pairs of the mesh.
"""

import numpy as np


def _indices(values) -> np.ndarray:
  array = np.asarray(values, dtype=np.int32)
  array.setflags(write=False)
  return array


NUM_POINTS = 468

# Eye corners: MediaPipe's landmark tracker takes the roll from the line 33 -> 263.
RIGHT_EYE_OUTER = 33
RIGHT_EYE_INNER = 133
LEFT_EYE_INNER = 362
LEFT_EYE_OUTER = 263
NOSE_TIP = 1
UPPER_LIP_CENTER = 13
LOWER_LIP_CENTER = 14

RIGHT_EYE_LOOP = _indices([
    33, 7, 163, 144, 145, 153, 154, 155,           # lower lid, outer -> inner
    133, 173, 157, 158, 159, 160, 161, 246])        # inner corner, upper lid inner -> outer
LEFT_EYE_LOOP = _indices([
    263, 249, 390, 373, 374, 380, 381, 382,         # lower lid, outer -> inner
    362, 398, 384, 385, 386, 387, 388, 466])        # inner corner, upper lid inner -> outer
INNER_LIPS_LOOP = _indices([
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324,    # lower inner lip, right -> left corner
    308, 415, 310, 311, 312, 13, 82, 81, 80, 191])  # upper inner lip, left -> right
OUTER_LIPS_LOOP = _indices([
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375,   # lower outer lip, right -> left corner
    291, 409, 270, 269, 267, 0, 37, 39, 40, 185])   # upper outer lip, left -> right
FACE_OVAL_LOOP = _indices([
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109])

IBUG68_FROM_MESH = _indices([
    # jaw 0-16
    127, 234, 132, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 361, 454, 356,
    # brows 17-26
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose 27-35
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    # eyes 36-47
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lips 48-59
    61, 39, 37, 0, 267, 269, 291, 321, 314, 17, 84, 91,
    # inner lips 60-67
    78, 81, 13, 311, 308, 402, 14, 178])

# iBUG point i is the mirror image of MIRROR_68[i] (points on the midline map to themselves).
MIRROR_68 = _indices(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])
