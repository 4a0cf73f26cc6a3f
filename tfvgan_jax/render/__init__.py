"""Pure-JAX rendering: rasterizer -> fragments; texture transfer; masks; shading; dense 3D flow; warp.

Everything here is a pure function of arrays (jit- and vmap-safe, static shapes) and knows nothing
of models, data or training.
"""

from tfvgan_jax.render.flow import dense_flow, vertex_displacement, warp, warping_error_per_sample
from tfvgan_jax.render.rasterize import (
    BACKGROUND_ID, Fragments, capacity_bucket, default_capacity, default_chunk, default_group, depth_at, interpolate_at_pixels,
    gather_corners, interpolate_attributes, rasterize, visible, chunks_needed,
)
from tfvgan_jax.render.sampling import bilinear_sample, pixel_centers
from tfvgan_jax.render.light import (
    SH_TERMS, fit_sh_light, luminance, pixel_normals, sh_basis, shading, shading_ratio, vertex_normals,
)
from tfvgan_jax.render.texture import (
    FaceRender, appearance_hint, face_mask, render_face, surface_points, transfer_texture,
)

__all__ = [
    "BACKGROUND_ID", "FaceRender", "Fragments", "appearance_hint", "bilinear_sample", "capacity_bucket", "default_capacity",
    "default_chunk", "default_group", "dense_flow", "depth_at", "face_mask", "gather_corners", "interpolate_attributes", "interpolate_at_pixels", "pixel_centers",
    "rasterize", "render_face", "surface_points", "transfer_texture", "vertex_displacement", "visible",
    "warp", "warping_error_per_sample", "chunks_needed", "SH_TERMS", "fit_sh_light", "luminance", "pixel_normals",
    "sh_basis", "shading", "shading_ratio", "vertex_normals",
]
