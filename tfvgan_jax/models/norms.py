"""Conditional normalization layers of the generator's upsampling stages, chosen by name.

Every layer in `NORMS` is built as `cls(num_features, appearance_features, rngs=rngs, dtype=dtype)`
(dtype: of its convolutions; parameters are float32) and called as
`norm(u, t, h)` with

  u: [B, H, W, C] decoder feature, C = num_features.
  t: [B, H, W, C_t] appearance feature P resized (bilinear) to u's spatial size, C_t =
     appearance_features. Layers that need it at width C project it with their own 1x1 conv.
  h: [B, H, W, 1] face mask at u's size, 1 on the face, 0 elsewhere (soft at the border after
     resizing); h' = 1 - h is the non-facial region.

and returns [B, H, W, C]. The generator hands them float32 features: statistics are taken in float32
whatever the convolutions' dtype. Layers holding a BatchNorm use batch statistics in training and running
statistics after `module.eval()`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

EPSILON = 1e-5


def masked_moments(x: jax.Array, region: jax.Array, epsilon: float = EPSILON) -> tuple[jax.Array, jax.Array]:
  """Per-sample, per-channel mean and standard deviation of x over a weighted region.

  Args:
    x: [B, H, W, C].
    region: [B, H, W, 1] weights in [0, 1].
    epsilon: keeps both divisions finite; an empty region gives mean 0 and std sqrt(epsilon).

  Returns:
    mean, std: [B, 1, 1, C] each, std = sqrt(var + epsilon).
  """
  weight = jnp.sum(region, axis=(1, 2), keepdims=True) + epsilon
  mean = jnp.sum(region * x, axis=(1, 2), keepdims=True) / weight
  var = jnp.sum(region * jnp.square(x - mean), axis=(1, 2), keepdims=True) / weight
  return mean, jnp.sqrt(var + epsilon)


def instance_normalize(x: jax.Array) -> jax.Array:
  """x normalized per sample and channel over all pixels, without affine. [B, H, W, C] -> same.

  The statistics and the normalization are computed in float32; the result has x's dtype.
  """
  wide = x.astype(jnp.float32)
  mean, std = masked_moments(wide, jnp.ones_like(wide[..., :1]))
  return ((wide - mean) / std).astype(x.dtype)


def region_statistics_transfer(a: jax.Array, region_a: jax.Array, b: jax.Array, region_b: jax.Array) -> jax.Array:
  """T(A|X <- stats of B|Y) = sigma_Y(B) (A - mu_X(A)) / sigma_X(A) + mu_Y(B).

  AdaIN's transfer (UniFaceGAN eq. 7, TFVGAN eq. 5) with each moment taken over a region only, so
  that the face statistics come from the face and the background ones from the background.

  Args:
    a, b: [B, H, W, C].
    region_a, region_b: [B, H, W, 1] weights of X and Y.

  Returns:
    [B, H, W, C], defined at every pixel; the caller masks it.
  """
  mean_a, std_a = masked_moments(a, region_a)
  mean_b, std_b = masked_moments(b, region_b)
  return std_b * (a - mean_a) / std_a + mean_b


def region_aware_combination(u: jax.Array, t: jax.Array, h: jax.Array, alpha: jax.Array, beta: jax.Array) -> jax.Array:
  """RCN / BSN of already batch-normalized features (UniFaceGAN eq. 6, TFVGAN eq. 4; DESIGN.md choice 3).

  out = H  * (alpha * T(U|H <- stats of T|H') + (1 - alpha) * U)
      + H' * (beta  * T(T|H' <- stats of U|H) + (1 - beta)  * T)

  Args:
    u: [B, H, W, C] decoder feature.
    t: [B, H, W, C] appearance feature.
    h: [B, H, W, 1] face mask; H' = 1 - h.
    alpha, beta: [C] mixing weights in [0, 1].

  Returns:
    [B, H, W, C].
  """
  background = 1.0 - h
  face = alpha * region_statistics_transfer(u, h, t, background) + (1.0 - alpha) * u
  rest = beta * region_statistics_transfer(t, background, u, h) + (1.0 - beta) * t
  return h * face + background * rest


def _parameter_free_batch_norm(num_features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # No learned affine, as in SPADE: the scale and shift of the output come from the condition.
  return nnx.BatchNorm(num_features, use_scale=False, use_bias=False, rngs=rngs)


class RegionAwareNorm(nnx.Module):
  """RCN (UniFaceGAN) / BSN (TFVGAN): region-restricted statistics exchange between U and T.

  U and T are batch-normalized without learned affine: an affine on U or T would be undone by the
  re-normalization inside the transfer terms, and the retention terms are rescaled by the next conv.
  alpha and beta are stored as logits and read through a sigmoid, so any optimizer step keeps them
  in (0, 1) while their gradient never vanishes at a bound (as clipping would); they start at
  `alpha_init` and `beta_init` (0.8 and 0.1 as in the paper; `model.rcn_alpha_init`, `rcn_beta_init`).
  """

  def __init__(self, num_features: int, appearance_features: int, *, alpha_init: float = 0.8,
               beta_init: float = 0.1, rngs: nnx.Rngs, dtype=jnp.float32):
    self.project = nnx.Conv(appearance_features, num_features, (1, 1), rngs=rngs, dtype=dtype)
    self.norm_u = _parameter_free_batch_norm(num_features, rngs)
    self.norm_t = _parameter_free_batch_norm(num_features, rngs)
    self.alpha_logit = nnx.Param(jnp.full((num_features,), _logit(alpha_init), jnp.float32))
    self.beta_logit = nnx.Param(jnp.full((num_features,), _logit(beta_init), jnp.float32))

  def mixing_weights(self) -> tuple[jax.Array, jax.Array]:
    """alpha, beta: [C] each, in (0, 1)."""
    return jax.nn.sigmoid(self.alpha_logit[...]), jax.nn.sigmoid(self.beta_logit[...])

  def __call__(self, u: jax.Array, t: jax.Array, h: jax.Array) -> jax.Array:
    t = self.norm_t(self.project(t))
    return region_aware_combination(self.norm_u(u), t, h, *self.mixing_weights())


class AdaptiveInstanceNorm(nnx.Module):
  """AdaIN: U instance-normalized, then given T's global per-channel mean and std (eq. 7 unrestricted)."""

  def __init__(self, num_features: int, appearance_features: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.project = nnx.Conv(appearance_features, num_features, (1, 1), rngs=rngs, dtype=dtype)

  def __call__(self, u: jax.Array, t: jax.Array, h: jax.Array) -> jax.Array:
    everywhere = jnp.ones_like(h)
    return region_statistics_transfer(u, everywhere, self.project(t), everywhere)


class SpatiallyAdaptiveNorm(nnx.Module):
  """SPADE: batch-normalized U modulated by per-pixel gamma, beta predicted from T by 3x3 convs."""

  def __init__(self, num_features: int, appearance_features: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.norm = _parameter_free_batch_norm(num_features, rngs)
    # The hidden width follows the feature width (SPADE fixes 128) so that tiny configs stay tiny.
    self.shared = nnx.Conv(appearance_features, num_features, (3, 3), rngs=rngs, dtype=dtype)
    self.gamma = nnx.Conv(num_features, num_features, (3, 3), rngs=rngs, dtype=dtype)
    self.beta = nnx.Conv(num_features, num_features, (3, 3), rngs=rngs, dtype=dtype)

  def __call__(self, u: jax.Array, t: jax.Array, h: jax.Array) -> jax.Array:
    hidden = jax.nn.relu(self.shared(t))
    return self.norm(u) * (1.0 + self.gamma(hidden)) + self.beta(hidden)


class InstanceNorm(nnx.Module):
  """Plain instance normalization without affine, as in pix2pixHD; ignores T and H."""

  def __init__(self, num_features: int, appearance_features: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    del num_features, appearance_features, rngs, dtype

  def __call__(self, u: jax.Array, t: jax.Array, h: jax.Array) -> jax.Array:
    return instance_normalize(u)


NORMS = {
    'rcn': RegionAwareNorm,
    'adain': AdaptiveInstanceNorm,
    'spade': SpatiallyAdaptiveNorm,
    'instance': InstanceNorm,
}


def make_norm(name: str, num_features: int, appearance_features: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
              **options) -> nnx.Module:
  """The conditional normalization layer registered under `name` in `NORMS`, computing in `dtype`;
  `options` are that layer's own keyword arguments (RCN's `alpha_init`, `beta_init`)."""
  if name not in NORMS:
    raise ValueError(f"unknown norm {name!r}; choose one of {sorted(NORMS)}")
  return NORMS[name](num_features, appearance_features, rngs=rngs, dtype=dtype, **options)


def _logit(p: float) -> float:
  return math.log(p / (1.0 - p))
