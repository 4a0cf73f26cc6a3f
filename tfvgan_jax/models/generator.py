"""Generator G(R, P, M^) (UniFaceGAN §III-C, TFVGAN §3.3): pix2pixHD's encoder-decoder whose
upsampling stages are normalized by a conditional layer from `norms.NORMS`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tfvgan_jax.models.embedder import stage_widths
from tfvgan_jax.models.norms import instance_normalize, make_norm


def attention_resolution(image_size: int) -> int:
  """Side of the feature map that carries self-attention: 64, or image_size / 4 below 256 px."""
  return 64 if image_size >= 256 else image_size // 4


class SelfAttention(nnx.Module):
  """SAGAN self-attention (Zhang et al. 2019): x + gamma * softmax(q k^T) v over all pixels.

  gamma starts at 0, so the block begins as the identity and the network learns how much
  long-range context to mix in.
  """

  def __init__(self, features: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    inner = max(features // 8, 1)
    self.query = nnx.Conv(features, inner, (1, 1), rngs=rngs, dtype=dtype)
    self.key = nnx.Conv(features, inner, (1, 1), rngs=rngs, dtype=dtype)
    self.value = nnx.Conv(features, features, (1, 1), rngs=rngs, dtype=dtype)
    self.gamma = nnx.Param(jnp.zeros((), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, H, W, C]."""
    batch, height, width, features = x.shape
    q = self.query(x).reshape(batch, height * width, -1)
    k = self.key(x).reshape(batch, height * width, -1)
    v = self.value(x).reshape(batch, height * width, features)
    # The softmax in float32: its sums over all pixels are what loses precision in bfloat16.
    attention = jax.nn.softmax(jnp.einsum('bic,bjc->bij', q, k).astype(jnp.float32), axis=-1).astype(v.dtype)
    mixed = self.gamma[...] * jnp.einsum('bij,bjc->bic', attention, v).reshape(x.shape)
    return x + mixed.astype(x.dtype)


class ResidualBlock(nnx.Module):
  """pix2pixHD residual block: x + IN(conv(ReLU(IN(conv(x)))))."""

  def __init__(self, features: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.conv1 = nnx.Conv(features, features, (3, 3), rngs=rngs, dtype=dtype)
    self.conv2 = nnx.Conv(features, features, (3, 3), rngs=rngs, dtype=dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, H, W, C]."""
    y = jax.nn.relu(instance_normalize(self.conv1(x)))
    return x + instance_normalize(self.conv2(y))


# What G's decoder takes at each stage besides its features (`model.gen_skips`):
#   'none'     the papers: G(R, P, M^), everything through the bottleneck;
#   'hint'     the hint image M = X (1 - M^), resized to the stage, joins the input of each decoder
#              conv and of the output conv: the frame the edit keeps with the rendered face cut out,
#              so background and hair arrive at full resolution without a pixel of the face whose
#              identity must not pass on;
#   'encoder'  G's own encoder features of R at the stage's resolution (U-Net skips): the render's
#              detail (the source's identity, the new pose and expression) past the bottleneck;
#   'both'     the two together.
GEN_SKIPS = ('none', 'hint', 'encoder', 'both')

# What G's output is (`model.gen_output`):
#   'image'     the papers: Y = tanh(head), every pixel drawn by G;
#   'residual'  G draws a correction of the scene: Y = tanh(artanh(R + M) + head) (`residual_over_scene`),
#               so a head of 0 gives the recombined face pasted into the kept frame pixel for pixel,
#               and G learns what the scene lacks (the seam, the inside of the mouth, occluded skin,
#               light) while the rest stays as sharp as the frames it comes from.
# (A mask alpha that chose between G's image and R + M, GANimation's attention over its input,
# was tried: on the shared clips at 128 px alpha went to 0 everywhere within 100 steps, where
# the sigmoid passes no gradient back, and G was never used again.)
GEN_OUTPUTS = ('image', 'residual')

# How close to +-1 the scene's pixels are taken before artanh (`residual_over_scene`).
_SCENE_LIMIT = 1.0 - 1e-3


def residual_over_scene(correction: jax.Array, render: jax.Array, hint: jax.Array) -> jax.Array:
  """Y = tanh(artanh(R + M) + correction), G's output with `model.gen_output='residual'`.

  Not in the papers (their G draws every pixel, `GEN_OUTPUTS`' 'image'). The scene is R + M: R is
  0 off the rendered face and the hint M = X (1 - M^) is 0 on it, so R + M is the recombined face
  pasted into the kept frame (0, mid-grey, where R has no texture). The correction is added before
  the tanh, so Y stays in (-1, 1) and every pixel passes gradient back to G, whatever the
  correction; a correction of 0 returns the scene (up to its pixels taken within 1e-3 of +-1).

  Args:
    correction: G's head [B, H, W, 3].
    render: R [B, H, W, 3] in [-1, 1], 0 off the face.
    hint: M [B, H, W, 3] in [-1, 1], 0 on the face.
  """
  scene = jnp.clip(render + hint, -_SCENE_LIMIT, _SCENE_LIMIT)
  return jnp.tanh(jnp.arctanh(scene) + correction)


def _conv_padded(conv: nnx.Conv, inputs: jax.Array, multiple: int = 8) -> jax.Array:
  """conv(inputs) (stride 1, SAME padding) with the input channels zero-padded to a multiple of 8
  at call time: the same function and the same parameters.

  The hint's three channels make a decoder conv's input channels odd (e.g. 64 + 3), which XLA's CPU
  convolutions run slowly: G and E's step (the demo's networks with gen_skips='both', batch 16,
  forward and backward) took 726-728 ms padded against 767-775 ms unpadded, medians of two
  interleaved runs in one process on a 2-core CPU. Padded channels also suit accelerators.
  """
  if conv.strides not in (1, (1, 1), None) or conv.padding != "SAME" or conv.feature_group_count != 1:
    raise ValueError("_conv_padded computes stride-1, SAME, ungrouped convolutions only")
  pad = -inputs.shape[-1] % multiple
  if not pad:
    return conv(inputs)
  inputs = jnp.concatenate([inputs, jnp.zeros(inputs.shape[:-1] + (pad,), inputs.dtype)], axis=-1)
  kernel = jnp.pad(conv.kernel[...], ((0, 0), (0, 0), (0, pad), (0, 0)))
  dtype = conv.dtype or inputs.dtype
  out = jax.lax.conv_general_dilated(inputs.astype(dtype), kernel.astype(dtype), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=conv.precision)
  return out if conv.bias is None else out + conv.bias[...].astype(dtype)


def _resize(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of [B, h, w, C] to [B, height, width, C] (antialiased when shrinking)."""
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), 'bilinear')


class Generator(nnx.Module):
  """Y = G(R, P, M^).

  Encoder: a 7x7 conv and `downsamples` 3x3 stride-2 convs, each with instance norm and ReLU;
  `res_blocks` residual blocks at the bottleneck; decoder: per stage, a 2x nearest upsample and a
  3x3 conv (no transposed conv, which leaves checkerboard artifacts), the conditional norm `norm`
  with T_l = P and H_l = M^ resized to the stage, and ReLU; a 7x7 conv and tanh. With `attention`,
  a SelfAttention block follows the stage (or the bottleneck) whose side is
  `attention_resolution(image_size)`. `norm_options` are the norm layer's own keyword arguments.
  With `skips` (`GEN_SKIPS`) 'hint' or 'both', the hint image resized to each decoder stage is
  concatenated to the input of that stage's conv and of the output conv: Y = G(R, P, M^, M); with
  'encoder' or 'both', the encoder's feature map of the stage's resolution is concatenated to the
  stage conv's input. With `output` 'residual' (`GEN_OUTPUTS`), the head draws a correction of
  the scene R + M (`residual_over_scene`) and starts at 0, so a fresh G returns the scene.
  Convolutions and matmuls run in `dtype` (parameters stay float32); normalization statistics, the
  softmax and the output in float32.
  """

  def __init__(
      self,
      image_size: int,
      appearance_features: int,
      *,
      width: int = 64,
      downsamples: int = 4,
      res_blocks: int = 9,
      norm: str = 'rcn',
      attention: bool = True,
      max_width: int = 512,
      norm_options: dict | None = None,
      skips: str = 'none',
      output: str = 'image',
      rngs: nnx.Rngs,
      dtype=jnp.float32,
  ):
    if image_size % 2**downsamples:
      raise ValueError(f"image_size {image_size} is not divisible by 2^{downsamples}")
    if skips not in GEN_SKIPS:
      raise ValueError(f"model.gen_skips={skips!r}: unknown value; expected one of {list(GEN_SKIPS)}")
    if output not in GEN_OUTPUTS:
      raise ValueError(f"model.gen_output={output!r}: unknown value; expected one of {list(GEN_OUTPUTS)}")
    self.skips = skips
    self.output = output
    self.hint_skips, self.encoder_skips = skips in ('hint', 'both'), skips in ('encoder', 'both')
    extra = 3 if self.hint_skips else 0
    widths = stage_widths(width, downsamples, max_width)
    self.dtype = dtype
    self.stem = nnx.Conv(3, widths[0], (7, 7), rngs=rngs, dtype=dtype)
    self.down = nnx.List([
        nnx.Conv(widths[i], widths[i + 1], (3, 3), strides=2, rngs=rngs, dtype=dtype) for i in range(downsamples)
    ])
    self.res = nnx.List([ResidualBlock(widths[-1], rngs=rngs, dtype=dtype) for _ in range(res_blocks)])
    decoder_widths = widths[::-1]
    self.up = nnx.List([
        # Decoder stage i works at the resolution of encoder level downsamples - 1 - i.
        nnx.Conv(decoder_widths[i] + extra + (widths[downsamples - 1 - i] if self.encoder_skips else 0),
                 decoder_widths[i + 1], (3, 3), rngs=rngs, dtype=dtype)
        for i in range(downsamples)
    ])
    self.up_norms = nnx.List([
        make_norm(norm, decoder_widths[i + 1], appearance_features, rngs=rngs, dtype=dtype, **(norm_options or {}))
        for i in range(downsamples)
    ])
    # A residual head starts at 0 (a zero-initialised last layer, as in Fixup and ControlNet), so a
    # fresh G returns the scene itself and training starts from R + M instead of from noise added to
    # it: on the shared clips at 128 px, held-out SSIM 0.245 at step 0 with the default init.
    head_init = {'kernel_init': nnx.initializers.zeros_init()} if output == 'residual' else {}
    self.head = nnx.Conv(widths[0] + extra, 3, (7, 7), rngs=rngs, dtype=dtype, **head_init)
    # Index into decoder_widths of the feature map that gets attention: 0 is the bottleneck, i the
    # output of decoder stage i.
    self.attention_stage = None
    if attention:
      sides = [image_size // 2**(downsamples - i) for i in range(downsamples + 1)]
      side = attention_resolution(image_size)
      if side not in sides:
        raise ValueError(f"no generator feature map is {side} px wide (sides {sides}) for attention")
      self.attention_stage = sides.index(side)
      self.attention = SelfAttention(decoder_widths[self.attention_stage], rngs=rngs, dtype=dtype)

  def __call__(self, render: jax.Array, appearance: jax.Array, face_mask: jax.Array,
               hint: jax.Array | None = None) -> jax.Array:
    """G(R, P, M^), or G(R, P, M^, M) with hint skips.

    Args:
      render: R [B, H, W, 3] in [-1, 1].
      appearance: P [B, h, w, C_p] from the appearance embedder.
      face_mask: M^ [B, H, W, 1], 1 on the rendered face.
      hint: M [B, H, W, 3] in [-1, 1]; needed with `skips` 'hint' or 'both' or `output` 'residual',
        unused otherwise.

    Returns:
      Y [B, H, W, 3] in [-1, 1], float32 whatever the convolutions' dtype.
    """
    if self.hint_skips and hint is None:
      raise ValueError(f"a generator with hint skips (model.gen_skips={self.skips!r}) needs the hint image")
    if self.output == 'residual' and hint is None:
      raise ValueError("a generator that corrects the scene (model.gen_output='residual') needs the hint image")

    def conv_with_hint(conv, features):
      if not self.hint_skips:
        return conv(features)
      height, width = features.shape[1:3]
      stage_hint = _resize(hint, height, width).astype(features.dtype)
      return _conv_padded(conv, jnp.concatenate([features, stage_hint], axis=-1))

    x = jax.nn.relu(instance_normalize(self.stem(render)))
    encoded = [x]
    for conv in self.down:
      x = jax.nn.relu(instance_normalize(conv(x)))
      encoded.append(x)
    for block in self.res:
      x = block(x)
    if self.attention_stage == 0:
      x = self.attention(x)
    for stage, (conv, norm) in enumerate(zip(self.up, self.up_norms), start=1):
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      if self.encoder_skips:
        x = jnp.concatenate([x, encoded[len(self.up) - stage]], axis=-1)
      x = conv_with_hint(conv, x)
      height, width = x.shape[1:3]
      # The conditional norms take float32 features (statistics in float32, see `norms`).
      x = norm(x.astype(jnp.float32), _resize(appearance, height, width), _resize(face_mask, height, width))
      x = jax.nn.relu(x.astype(self.dtype))
      if self.attention_stage == stage:
        x = self.attention(x)
    out = conv_with_hint(self.head, x).astype(jnp.float32)
    if self.output == 'image':
      return jnp.tanh(out)
    return residual_over_scene(out, render.astype(jnp.float32), hint.astype(jnp.float32))
