"""tfvgan_jax: temporally consistent facial video editing with a 3D morphable model.

Layers, each importing only the ones listed before it:
  face3d  -- morphable model, camera, model files
  render  -- rasterizer, texture transfer, masks, dense 3D flow, warp
  data    -- frame records (TFDS ArrayRecord), synthetic corpus, sample selection, input pipeline
  models  -- appearance embedder, generator with region-aware normalization, discriminator
  losses  -- adversarial, appearance, reconstruction, temporal and feature-matching losses
"""

__version__ = "0.1.0"
