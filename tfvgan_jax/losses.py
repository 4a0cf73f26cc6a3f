"""The training losses of TFVGAN §3.4 / UniFaceGAN §III-D, as pure functions of arrays.

Images are NHWC float32 in [-1, 1]. Terms that the sample selection switches off for some samples
(L_rec and L_tmp on inter-video samples, DESIGN.md choices 2 and 4) are computed per sample as [B]
and averaged with a per-sample weight, so that a batch mixing both kinds of samples keeps static
shapes under jit. `weighted_sum` combines the terms as eq. 18 and keeps each one for logging.

Everything here is jit- and grad-safe; string arguments (loss type, target, region) choose code, so
they must be static under jit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from tfvgan_jax.render import warping_error_per_sample

REC_TARGETS = ("appearance", "identity")
TMP_REGIONS = ("face", "frame")
APP_REGIONS = ("frame", "background")


def weighted_mean(values: jax.Array, sample_weight: jax.Array | None = None) -> jax.Array:
  """The mean of per-sample losses weighted by `sample_weight`, 0 when every weight is 0.

  Args:
    values: [B] per-sample losses.
    sample_weight: [B] bool or float (1 enables a sample, 0 disables it); None weighs all by 1.

  Returns:
    [] float32.
  """
  if sample_weight is None:
    return jnp.mean(values)
  weight = jnp.asarray(sample_weight, jnp.float32)
  total = jnp.sum(weight)
  # The inner where keeps the division (and its gradient) finite when no sample is enabled.
  return jnp.where(total > 0, jnp.sum(weight * values) / jnp.where(total > 0, total, 1.0), 0.0)


def _per_sample_mean(values: jax.Array) -> jax.Array:
  """[B, ...] -> [B], the mean over every axis but the first."""
  return jnp.mean(values.reshape(values.shape[0], -1), axis=1)


# Adversarial loss: multi-scale, pix2pixHD style (TFVGAN eq. 8 / UniFaceGAN eq. 10).

# Which samples give D its real images (`loss.disc_real`): 'all' (X_p of every sample) or 'intra'
# (X_p of intra-video samples only: a D conditioned on X_i then never sees a real pair of two people
# against a fake pair of one, DESIGN.md choice 6).
DISC_REAL = ("all", "intra")
# Which of G's outputs the adversarial term of G's objective covers (`loss.adv_samples`): 'all'
# (the papers), or 'intra' only. A D conditioned on X_i with real pairs from intra samples sees
# X_i's background in every real pair and another video's in every inter fake, a difference G
# cannot remove (an inter output is pasted into X_p's frame); D still sees every fake.
ADV_SAMPLES = ("all", "intra")


def _real_mean(values: jax.Array, sample_weight: jax.Array | None) -> jax.Array:
  """The mean of [B, ...] per-element losses of real samples, the samples weighted by `sample_weight`."""
  return jnp.mean(values) if sample_weight is None else weighted_mean(_per_sample_mean(values), sample_weight)



def discriminator_hinge_loss(real_logits_per_scale: Sequence[jax.Array], fake_logits_per_scale: Sequence[jax.Array],
                             real_weight: jax.Array | None = None) -> jax.Array:
  """D's side of the multi-scale adversarial loss (TFVGAN eq. 8 / UniFaceGAN eq. 10) as a hinge.

  (1/K) sum_k mean(relu(1 - D_k(real))) + mean(relu(1 + D_k(fake))), the papers' log-loss replaced by
  the hinge as UniFaceGAN §III-C states.

  Args:
    real_logits_per_scale, fake_logits_per_scale: K arrays each, [B, h_k, w_k, 1] patch logits of
      scale k (any shape per scale; every element counts equally within its scale).
    real_weight: [B] weights of the real samples (`weighted_mean`; `loss.disc_real`), None for all.

  Returns:
    [] float32.
  """
  terms = [_real_mean(jax.nn.relu(1.0 - real), real_weight) + jnp.mean(jax.nn.relu(1.0 + fake))
           for real, fake in zip(real_logits_per_scale, fake_logits_per_scale, strict=True)]
  return jnp.mean(jnp.stack(terms))


def generator_hinge_loss(fake_logits_per_scale: Sequence[jax.Array], sample_weight: jax.Array | None = None) -> jax.Array:
  """G's side of the multi-scale hinge adversarial loss (TFVGAN eq. 8 / UniFaceGAN eq. 10).

  (1/K) sum_k -mean(D_k(fake)).

  Args:
    fake_logits_per_scale: K arrays, [B, h_k, w_k, 1].
    sample_weight: [B] weights of the samples (`weighted_mean`; `loss.adv_samples`), None for all.

  Returns:
    [] float32.
  """
  return jnp.mean(jnp.stack([_real_mean(-fake, sample_weight) for fake in fake_logits_per_scale]))


def discriminator_non_saturating_loss(real_logits_per_scale: Sequence[jax.Array],
                                      fake_logits_per_scale: Sequence[jax.Array],
                                      real_weight: jax.Array | None = None) -> jax.Array:
  """D's side of the multi-scale adversarial loss in the papers' log form (TFVGAN eq. 8 / UniFaceGAN eq. 10).

  (1/K) sum_k mean(-log sigmoid(D_k(real))) + mean(-log(1 - sigmoid(D_k(fake)))), written with
  softplus so that large logits do not overflow.

  Args:
    real_logits_per_scale, fake_logits_per_scale: K arrays each, [B, h_k, w_k, 1].
    real_weight: as `discriminator_hinge_loss`.

  Returns:
    [] float32.
  """
  terms = [_real_mean(jax.nn.softplus(-real), real_weight) + jnp.mean(jax.nn.softplus(fake))
           for real, fake in zip(real_logits_per_scale, fake_logits_per_scale, strict=True)]
  return jnp.mean(jnp.stack(terms))


def generator_non_saturating_loss(fake_logits_per_scale: Sequence[jax.Array],
                                  sample_weight: jax.Array | None = None) -> jax.Array:
  """G's side of the multi-scale log-form adversarial loss (TFVGAN eq. 8 / UniFaceGAN eq. 10).

  (1/K) sum_k mean(-log sigmoid(D_k(fake))): the non-saturating form of minimizing log(1 - D),
  which keeps G's gradient alive while D rejects its samples confidently.

  Args:
    fake_logits_per_scale: K arrays, [B, h_k, w_k, 1].
    sample_weight: as `generator_hinge_loss`.

  Returns:
    [] float32.
  """
  return jnp.mean(jnp.stack([_real_mean(jax.nn.softplus(-fake), sample_weight) for fake in fake_logits_per_scale]))


ADVERSARIAL: dict[str, tuple[Callable[..., jax.Array], Callable[..., jax.Array]]] = {
    "hinge": (discriminator_hinge_loss, generator_hinge_loss),
    "non_saturating": (discriminator_non_saturating_loss, generator_non_saturating_loss),
}


def adversarial_losses(loss_type: str) -> tuple[Callable[..., jax.Array], Callable[..., jax.Array]]:
  """(d_loss_fn, g_loss_fn) for a config string, one of `ADVERSARIAL`."""
  if loss_type not in ADVERSARIAL:
    raise ValueError(f"unknown adversarial loss {loss_type!r}; expected one of {sorted(ADVERSARIAL)}")
  return ADVERSARIAL[loss_type]


def feature_matching_loss(real_features_per_scale: Sequence[Sequence[jax.Array]],
                          fake_features_per_scale: Sequence[Sequence[jax.Array]],
                          sample_weight: jax.Array | None = None) -> jax.Array:
  """pix2pixHD feature matching: L1 between D's intermediate features of real and fake.

  Not one of the papers' terms (its weight is 0 by default, as eq. 18 has no such term); the real
  features are constants, so the loss only moves G. The trainer pairs Y only with its own ground
  truth X_p, i.e. weighs intra-video samples only (DESIGN.md choice 6): on inter samples X_p shows
  another person, and matching its features would pull swaps toward the target's identity.

  Args:
    real_features_per_scale, fake_features_per_scale: K sequences (one per scale) of the same
      number of layer features each, [B, h, w, c] per layer; the final logits are not included.
    sample_weight: [B] per-sample weights (`weighted_mean`), None for all.

  Returns:
    [] float32: mean over scales of the mean over layers of the (weighted) mean over samples of
    mean |fake - real|.
  """
  per_scale = []
  for real_layers, fake_layers in zip(real_features_per_scale, fake_features_per_scale, strict=True):
    per_layer = [weighted_mean(_per_sample_mean(jnp.abs(fake - jax.lax.stop_gradient(real))), sample_weight)
                 for real, fake in zip(real_layers, fake_layers, strict=True)]
    per_scale.append(jnp.mean(jnp.stack(per_layer)))
  return jnp.mean(jnp.stack(per_scale))


# Appearance preserving and reconstruction losses.


def appearance_loss_per_sample(embedding_of_output: jax.Array, embedding_of_appearance: jax.Array) -> jax.Array:
  """L_app = ||E(Y) - E(X_p)||_1 per sample, as a mean over the embedding (TFVGAN eq. 6 / UniFaceGAN eq. 8).

  Args:
    embedding_of_output, embedding_of_appearance: [B, ...] appearance features E(Y), E(X_p).

  Returns:
    [B] float32.
  """
  return _per_sample_mean(jnp.abs(embedding_of_output - embedding_of_appearance))


def appearance_loss(embedding_of_output: jax.Array, embedding_of_appearance: jax.Array, sample_weight: jax.Array | None = None) -> jax.Array:
  """L_app (TFVGAN eq. 6 / UniFaceGAN eq. 8) averaged over the enabled samples.

  Args:
    embedding_of_output, embedding_of_appearance: [B, ...].
    sample_weight: [B] or None (every sample counts).

  Returns:
    [] float32.
  """
  return weighted_mean(appearance_loss_per_sample(embedding_of_output, embedding_of_appearance), sample_weight)


def appearance_loss_image(image: jax.Array, face_mask: jax.Array, region: str) -> jax.Array:
  """What E sees of an image in L_app (eq. 8), chosen by `loss.app_region`.

  'frame' (the papers): the whole image. E(Y) is then pulled toward E(X_p) on the face too, which
  on an inter-video sample holds X_p's own expression and face, not the ones asked for.
  'background': the image with the face region M^ set to 0 (grey in [-1, 1]), in both E(Y) and
  E(X_p): L_app keeps the background, hair and pose of X_p and says nothing about the face, which
  the rendered face R and L_rec constrain.

  Args:
    image: Y or X_p [B, H, W, C] in [-1, 1].
    face_mask: M^ [B, H, W] or [B, H, W, 1], bool or float in [0, 1] (1 on the face).
    region: one of `APP_REGIONS`.
  """
  if region == "frame":
    return image
  if region == "background":
    mask = jnp.reshape(jnp.asarray(face_mask, image.dtype), image.shape[:3] + (1,))
    return image * (1 - mask)
  raise ValueError(f"unknown appearance loss region {region!r}; expected one of {list(APP_REGIONS)}")


def reconstruction_target(x_identity: jax.Array, x_appearance: jax.Array, rec_target: str) -> jax.Array:
  """The ground truth of L_rec, chosen by `loss.rec_target` (DESIGN.md choice 1).

  'appearance' (default) is X_p: with X_e = X_p on intra-video samples, Y should equal X_p, as the
  papers' own self-reenactment figures show; 'identity' is X_i, eq. 7 / 9 as written.

  Args:
    x_identity, x_appearance: [B, H, W, C].
    rec_target: one of `REC_TARGETS`.

  Returns:
    [B, H, W, C].
  """
  if rec_target == "appearance":
    return x_appearance
  if rec_target == "identity":
    return x_identity
  raise ValueError(f"unknown reconstruction target {rec_target!r}; expected one of {list(REC_TARGETS)}")


def reconstruction_loss_per_sample(output: jax.Array, target: jax.Array) -> jax.Array:
  """L_rec = ||Y - target||_1 per sample, as a mean over pixels and channels (TFVGAN eq. 7 / UniFaceGAN eq. 9).

  Args:
    output, target: [B, H, W, C].

  Returns:
    [B] float32.
  """
  return _per_sample_mean(jnp.abs(output - target))


def reconstruction_loss(output: jax.Array, target: jax.Array, sample_weight: jax.Array | None) -> jax.Array:
  """L_rec (TFVGAN eq. 7 / UniFaceGAN eq. 9) averaged over the samples whose weight is nonzero.

  Inter-video samples have no ground truth, so they carry weight 0; a batch with none enabled
  gives 0.

  Args:
    output, target: [B, H, W, C].
    sample_weight: [B] bool or float.

  Returns:
    [] float32.
  """
  return weighted_mean(reconstruction_loss_per_sample(output, target), sample_weight)


def background_loss_per_sample(output: jax.Array, appearance: jax.Array, face_mask: jax.Array) -> jax.Array:
  """||(Y - X_p)(1 - M^)||_1 per sample, as a mean over the pixels off the face region and the
  channels (0 for a sample whose face region covers the frame).

  Not a term of the papers (`loss.weights.bg`, default 0): on an inter-video sample no pixel of Y
  has a ground truth under eq. 18, yet off the recombined face Y is to be the frame it is pasted
  into, X_p's, which the hint M = X_p (1 - M^) shows G. This is L_rec (eq. 9) restricted to there.

  Args:
    output, appearance: Y and X_p [B, H, W, C].
    face_mask: M^ [B, H, W] or [B, H, W, 1], bool or float in [0, 1] (1 on the face).

  Returns:
    [B] float32.
  """
  keep = 1.0 - jnp.reshape(jnp.asarray(face_mask, jnp.float32), output.shape[:3] + (1,))
  channels = output.shape[-1]
  error = jnp.sum(jnp.abs(output - appearance) * keep, axis=(1, 2, 3))
  area = jnp.sum(keep, axis=(1, 2, 3)) * channels
  return jnp.where(area > 0, error / jnp.where(area > 0, area, 1.0), 0.0)


def background_loss(output: jax.Array, appearance: jax.Array, face_mask: jax.Array,
                    sample_weight: jax.Array | None) -> jax.Array:
  """`background_loss_per_sample` averaged over the samples whose weight is nonzero (the
  inter-video ones in training); a batch with none enabled gives 0."""
  return weighted_mean(background_loss_per_sample(output, appearance, face_mask), sample_weight)


# Temporal loss.


def temporal_mask(valid: jax.Array, face_mask: jax.Array, region: str) -> jax.Array:
  """The pixels that L_tmp compares, chosen by `loss.tmp_region` (DESIGN.md choice 2).

  'face': where the flow is valid (visible at t and at t-1). 'frame': those, and every background
  pixel, where the flow is zero (eq. 14/16) so the background is held static.

  Args:
    valid: [B, H, W] bool, from `render.dense_flow`.
    face_mask: [B, H, W] or [B, H, W, 1], bool or float M^ of frame t.
    region: one of `TMP_REGIONS`.

  Returns:
    [B, H, W] bool.
  """
  valid = jnp.asarray(valid, bool)
  if region == "face":
    return valid
  if region == "frame":
    return valid | ~(jnp.reshape(face_mask, valid.shape) > 0)
  raise ValueError(f"unknown temporal loss region {region!r}; expected one of {list(TMP_REGIONS)}")


def temporal_loss_per_sample(output_t: jax.Array, output_prev: jax.Array, flow: jax.Array, mask: jax.Array) -> jax.Array:
  """L_tmp = ||Y^t - warp(Y^{t-1}, F)||_2^2 per sample, as a mean over masked pixels and channels.

  TFVGAN eq. 15 / UniFaceGAN eq. 17 written as a backward warp (DESIGN.md choice 2): Y^{t-1} is
  sampled at q + F(q) and compared with Y^t at q. Both frames keep their gradients, as both are
  outputs of G.

  Args:
    output_t, output_prev: [B, H, W, C] Y^t and Y^{t-1}.
    flow: [B, H, W, 2] from `render.dense_flow` of frame t.
    mask: [B, H, W] bool, the pixels compared (`temporal_mask`).

  Returns:
    [B] float32; 0 for a sample with no masked pixel.
  """
  return warping_error_per_sample(output_t, output_prev, flow, mask)


def temporal_loss(
    output_t: jax.Array,
    output_prev: jax.Array,
    flow: jax.Array,
    valid: jax.Array,
    face_mask: jax.Array,
    region: str,
    sample_weight: jax.Array | None,
) -> jax.Array:
  """L_tmp (TFVGAN eq. 15 / UniFaceGAN eq. 17) over `region`, averaged over the enabled samples.

  Args:
    output_t, output_prev: [B, H, W, C] Y^t and Y^{t-1}.
    flow: [B, H, W, 2], valid: [B, H, W] bool, both from `render.dense_flow`.
    face_mask: [B, H, W] or [B, H, W, 1] M^ of frame t.
    region: 'face' or 'frame' (`temporal_mask`).
    sample_weight: [B] bool or float; intra-video samples only unless `loss.tmp_on_inter`.

  Returns:
    [] float32.
  """
  mask = temporal_mask(valid, face_mask, region)
  return weighted_mean(temporal_loss_per_sample(output_t, output_prev, flow, mask), sample_weight)


# Total.


def weighted_sum(losses: Mapping[str, jax.Array], weights: Mapping[str, float]) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The total objective alpha L_adv + beta L_app + gamma L_rec + lambda L_tmp (TFVGAN / UniFaceGAN eq. 18).

  Every loss needs a weight and every weight a loss, so that a term the config names cannot be
  silently left out (or a computed term silently dropped). Feature matching joins as 'fm'.

  Args:
    losses: name -> [] loss, e.g. {'adv', 'app', 'rec', 'tmp'}.
    weights: name -> weight (`config.loss.weights`; eq. 18's are adv 10, app 1, rec 10, tmp 5).

  Returns:
    total []: the sum of the weighted terms.
    terms: name -> weight * loss, for logging each under its own name.
  """
  missing_loss = sorted(set(weights) - set(losses))
  if missing_loss:
    raise KeyError(f"loss weights given for terms with no loss: {missing_loss}")
  missing_weight = sorted(set(losses) - set(weights))
  if missing_weight:
    raise KeyError(f"losses given with no weight: {missing_weight}")
  terms = {name: weights[name] * losses[name] for name in sorted(losses)}
  total = sum(terms.values(), jnp.zeros((), jnp.float32))
  return total, terms
