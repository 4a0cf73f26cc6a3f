"""The 3D morphable model: shapes (eq. 3/4), the weak-perspective camera, model files."""

from tfvgan_jax.face3d.camera import CAMERA_SIZE, Camera, euler_to_matrix, matrix_to_euler, project, project_face
from tfvgan_jax.face3d.io import ModelFileError, content_hash, export_mesh, load, save, validate_arrays
from tfvgan_jax.face3d.model import IBUG68_OUTER_EYE_CORNERS, MorphableModel, vertices
from tfvgan_jax.face3d.procedural import EXPRESSION_NAMES, IDENTITY_NAMES, load_model, procedural_model

__all__ = [
    "CAMERA_SIZE", "IBUG68_OUTER_EYE_CORNERS", "Camera", "EXPRESSION_NAMES", "IDENTITY_NAMES", "ModelFileError", "MorphableModel", "content_hash", "euler_to_matrix",
    "export_mesh", "load", "load_model", "matrix_to_euler", "procedural_model", "project", "project_face", "save",
    "validate_arrays", "vertices",
]
