"""The networks: appearance embedder E, generator G, multi-scale discriminator D, and the
conditional normalization layers of G chosen by name (`norms.NORMS`).

`build_models(config, rngs)` reads these config fields:
  image_size        side of the square frames.
  emb_width, emb_downsamples           E's first width and number of stride-2 convs.
  gen_width, gen_downsamples, gen_res_blocks   G's first width, stride-2 convs, bottleneck blocks.
  norm              G's upsampling norm: 'rcn' | 'adain' | 'spade' | 'instance'.
  rcn_alpha_init, rcn_beta_init        RCN's initial alpha and beta (0.8, 0.1 in the paper;
                    those values where a saved config predates the fields).
  attention         whether G has a self-attention block (see `generator.attention_resolution`).
  gen_skips         what G's decoder stages take besides their features (`GEN_SKIPS`): 'none' (the
                    papers; where a saved config predates the field), 'hint' (the hint image),
                    'encoder' (G's encoder features of R) or 'both'.
  gen_output        what G outputs (`GEN_OUTPUTS`): 'image' (the papers; where a saved config
                    predates the field) or 'residual' (a correction of the scene R + M,
                    `generator.residual_over_scene`).
  disc_width, disc_layers, disc_scales  D's first width, stride-2 convs per scale, scales.
  spectral_norm     spectral normalization on every conv of D.
  disc_conditional  D sees (Y, X_i) concatenated (False: Y alone, as eq. 8/10 of the papers write D).
  max_width         cap on every channel width.
  dtype             'float32' | 'bfloat16': the dtype of convolutions and matmuls (mixed precision).
                    Parameters, and so optimizer states and checkpoints, are float32 either way;
                    normalization statistics, the attention softmax and every output (Y, P, D's
                    logits and features) are float32, so the losses are too.

Initial weights are drawn with JAX's non-partitionable threefry: XLA on CPU compiles it several
times faster than the partitionable variant (the tiny test model's init: 15 s -> 5 s), and the drawn
values do not depend on how the parameters are sharded either way.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from tfvgan_jax.models.discriminator import MultiScaleDiscriminator, PatchDiscriminator, SpectralNormConv
from tfvgan_jax.models.embedder import AppearanceEmbedder
from tfvgan_jax.models.generator import GEN_OUTPUTS, GEN_SKIPS, Generator, ResidualBlock, SelfAttention, attention_resolution
from tfvgan_jax.models.norms import (
    NORMS,
    AdaptiveInstanceNorm,
    InstanceNorm,
    RegionAwareNorm,
    SpatiallyAdaptiveNorm,
    make_norm,
)


class Models(NamedTuple):
  embedder: AppearanceEmbedder
  generator: Generator
  discriminator: MultiScaleDiscriminator


def build_models(config, rngs: nnx.Rngs) -> Models:
  """E, G and D as the model config describes them (fields in the module docstring)."""
  with jax.threefry_partitionable(False):
    return _build_models(config, rngs)


# The compute dtypes `config.dtype` may name; 'auto' is one of them, chosen by the backend.
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# Backends whose matrix units run bfloat16 faster than float32 (measured on an H200: 1.7x the step
# at 256 px, batch 24, and half the memory; README, "Accelerators"). CPUs run it no faster.
BFLOAT16_BACKENDS = ('gpu', 'tpu')


def compute_dtype(config):
  """The dtype of convolutions and matmuls that the model config names (`DTYPES`, or 'auto').

  'auto' is bfloat16 on GPU and TPU (`BFLOAT16_BACKENDS`) and float32 elsewhere, decided by the
  backend that builds the networks: a checkpoint trained on a GPU runs in float32 on a CPU.
  """
  # Configs written before mixed precision existed (in older checkpoints) have no field.
  name = config.get('dtype', 'float32')
  if name == 'auto':
    name = 'bfloat16' if jax.default_backend() in BFLOAT16_BACKENDS else 'float32'
  if name not in DTYPES:
    raise ValueError(f"model.dtype={name!r}: expected 'auto' or one of {sorted(DTYPES)}")
  return DTYPES[name]


def _build_models(config, rngs: nnx.Rngs) -> Models:
  max_width = config.max_width
  dtype = compute_dtype(config)
  embedder = AppearanceEmbedder(
      width=config.emb_width, downsamples=config.emb_downsamples, max_width=max_width, rngs=rngs, dtype=dtype)
  generator = Generator(
      config.image_size,
      embedder.out_features,
      width=config.gen_width,
      downsamples=config.gen_downsamples,
      res_blocks=config.gen_res_blocks,
      norm=config.norm,
      attention=config.attention,
      max_width=max_width,
      norm_options=({"alpha_init": float(config.get("rcn_alpha_init", 0.8)),
                     "beta_init": float(config.get("rcn_beta_init", 0.1))} if config.norm == "rcn" else None),
      # Configs older than the field (in earlier checkpoints) have the papers' generator.
      skips=config.get("gen_skips", "none"),
      output=config.get("gen_output", "image"),
      rngs=rngs,
      dtype=dtype,
  )
  discriminator = MultiScaleDiscriminator(
      6 if config.disc_conditional else 3,
      width=config.disc_width,
      layers=config.disc_layers,
      scales=config.disc_scales,
      max_width=max_width,
      spectral_norm=config.spectral_norm,
      rngs=rngs,
      dtype=dtype,
  )
  return Models(embedder, generator, discriminator)


__all__ = [
    'NORMS',
    'AdaptiveInstanceNorm',
    'AppearanceEmbedder',
    'DTYPES',
    'GEN_OUTPUTS',
    'GEN_SKIPS',
    'Generator',
    'InstanceNorm',
    'Models',
    'MultiScaleDiscriminator',
    'PatchDiscriminator',
    'RegionAwareNorm',
    'ResidualBlock',
    'SelfAttention',
    'SpatiallyAdaptiveNorm',
    'SpectralNormConv',
    'attention_resolution',
    'build_models',
    'compute_dtype',
    'make_norm',
]
