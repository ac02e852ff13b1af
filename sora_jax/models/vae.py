"""Causal 3D video VAE (CogVideoX / Open-Sora style): 8x spatial, 4x temporal compression.

Every operation only looks at the current and earlier frames, and frame 0 is encoded
alone, so an image is a 1-frame video and latent frame j depends only on input
frames 0 .. 4j. The same property makes chunked processing exact: each causal conv
keeps the tail of its input in the ``'cache'`` collection and the next chunk uses it
in place of padding, so ``encode_chunked`` / ``decode_chunked`` match one-shot
``encode`` / ``decode`` while memory stays bounded by the chunk size.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_CACHE = "cache"
_LOGVAR_RANGE = (-30.0, 20.0)


def _streaming(module: nn.Module) -> bool:
  """True inside chunked encode/decode: the cache collection is mutable (and this is not init)."""
  return module.is_mutable_collection(_CACHE) and not module.is_initializing()


def _first_chunk(module: nn.Module) -> bool:
  """Whether frame 0 is in this call's input: one-shot, or the first chunk of a stream.

  Streaming layers record that they have started with a marker in the cache.
  """
  if module.has_variable(_CACHE, "started"):
    return False
  if _streaming(module):
    module.put_variable(_CACHE, "started", jnp.zeros((), jnp.bool_))
  return True


class CausalConv3d(nn.Module):
  """3D conv whose temporal receptive field is the current and the 2 previous frames.

  Time is padded on the front only, with copies of frame 0 (or, when streaming,
  with the cached last frames of the previous chunk); space is padded 'SAME'.
  """

  features: int
  kernel: tuple[int, int, int] = (3, 3, 3)
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kt, kh, kw = self.kernel
    pad = kt - 1
    if self.has_variable(_CACHE, "tail"):
      front = self.get_variable(_CACHE, "tail").astype(x.dtype)
    else:
      front = jnp.repeat(x[:, :1], pad, axis=1)
    x = jnp.concatenate([front, x], axis=1)
    if _streaming(self):
      self.put_variable(_CACHE, "tail", x[:, x.shape[1] - pad :])
    # A kt x kh x kw conv equals a kh x kw conv over the kt shifted frames stacked on
    # channels; XLA's CPU 2D conv is several times faster than its 3D conv.
    b, t, h, w, c = x.shape
    t -= pad
    stacked = jnp.concatenate([x[:, i : i + t] for i in range(kt)], axis=-1)
    y = nn.Conv(self.features, (kh, kw), padding="SAME", dtype=self.dtype, kernel_init=self.kernel_init)(
        stacked.reshape(b * t, h, w, kt * c)
    )
    return y.reshape(b, t, h, w, self.features)


class FrameGroupNorm(nn.Module):
  """GroupNorm over (H, W, channel group) of each frame separately.

  Statistics never mix frames, so a chunk normalises exactly as in the full video.
  """

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, t, h, w, c = x.shape
    # Two-pass variance: the fast E[x^2] - E[x]^2 form amplifies rounding noise, which
    # makes chunked and one-shot outputs drift apart on small frames.
    norm = nn.GroupNorm(num_groups=math.gcd(32, c), use_fast_variance=False, dtype=self.dtype)
    return norm(x.reshape(b * t, h, w, c)).reshape(x.shape)


class ResBlock(nn.Module):
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = CausalConv3d(self.features, dtype=self.dtype)(nn.silu(FrameGroupNorm(self.dtype)(x)))
    h = CausalConv3d(self.features, dtype=self.dtype)(nn.silu(FrameGroupNorm(self.dtype)(h)))
    if x.shape[-1] != self.features:
      x = nn.Dense(self.features, dtype=self.dtype)(x)
    return x + h


class Downsample(nn.Module):
  """2x spatial (strided conv) and optionally 2x temporal: n frames -> 1 + (n - 1) / 2.

  Temporal: frames are stacked in non-overlapping pairs along channels before the
  conv; frame 0 is paired with a copy of itself so it stays alone. An average-pool
  shortcut (DC-AE's space-to-channel shortcut, averaged) passes colour straight through
  the deep path.
  """

  temporal: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, t, h, w, c = x.shape
    shortcut = x
    if self.temporal:
      if _first_chunk(self):
        x = jnp.concatenate([x[:, :1], x], axis=1)
        t += 1
      pairs = x.reshape(b, t // 2, 2, h, w, c)
      shortcut = pairs.mean(axis=2)
      x = pairs.transpose(0, 1, 3, 4, 2, 5).reshape(b, t // 2, h, w, 2 * c)
    shortcut = shortcut.reshape(b, t // (2 if self.temporal else 1), h // 2, 2, w // 2, 2, c).mean((3, 5))
    return shortcut + nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME", dtype=self.dtype)(x)


class Upsample(nn.Module):
  """Mirror of Downsample: nearest 2x spatial + conv; optionally each frame -> 2 frames.

  Temporal: the conv emits 2x channels, split into two consecutive frames; frame 0
  (encoded alone) keeps only the second of its pair. A nearest-neighbour shortcut
  mirrors Downsample's average pool.
  """

  temporal: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, t, h, w, c = x.shape
    x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
    y = nn.Conv(c * (2 if self.temporal else 1), (3, 3), padding="SAME", dtype=self.dtype)(x)
    if not self.temporal:
      return x + y
    y = y.reshape(b, t, 2 * h, 2 * w, 2, c) + x[:, :, :, :, None]
    y = y.transpose(0, 1, 4, 2, 3, 5).reshape(b, 2 * t, 2 * h, 2 * w, c)
    return y[:, 1:] if _first_chunk(self) else y


class PatchShortcut(nn.Module):
  """Linear path between pixels and latents, around the deep encoder / decoder.

  Encoder side: each (temporal x spatial x spatial) block of pixels -> `features`
  (frame 0 is grouped with copies of itself, as in Downsample). Decoder side: the
  mirror, latents -> pixel blocks. Initialised by `pca_init`, it is the best linear
  autoencoder of the data from step 0 (colour and coarse layout right; trained from random
  init it had not learned colour after 250 steps); the deep path learns the residual detail.
  """

  temporal: int
  spatial: int
  features: int
  decode: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    tf, s = self.temporal, self.spatial
    if self.decode:
      b, t, h, w, _ = x.shape
      y = nn.Dense(tf * s * s * self.features, dtype=self.dtype)(x)
      y = y.reshape(b, t, h, w, tf, s, s, self.features).transpose(0, 1, 4, 2, 5, 3, 6, 7)
      y = y.reshape(b, t * tf, h * s, w * s, self.features)
      return y[:, tf - 1 :] if _first_chunk(self) else y
    return nn.Dense(self.features, dtype=self.dtype)(space_time_blocks(x, tf, s, _first_chunk(self)))


def space_time_blocks(x, temporal, spatial, has_first_frame=True):
  """[B, T, H, W, C] -> [B, T', H/s, W/s, temporal*s*s*C] pixel blocks; frame 0 (when
  present) is grouped with temporal - 1 copies of itself so it is encoded alone."""
  if has_first_frame:
    x = jnp.concatenate([jnp.repeat(x[:, :1], temporal - 1, axis=1), x], axis=1)
  b, t, h, w, c = x.shape
  tf, s = temporal, spatial
  x = x.reshape(b, t // tf, tf, h // s, s, w // s, s, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, t // tf, h // s, w // s, tf * s * s * c)


def motion_weighting(blocks, temporal, weight):
  """Scale the part of each pixel block [..., temporal * rest] that changes over its `temporal`
  frames by `weight`, keeping the block's mean over time: W = P_mean + weight (I - P_mean)."""
  x = blocks.reshape(blocks.shape[:-1] + (temporal, -1))
  mean = x.mean(axis=-2, keepdims=True)
  return (mean + weight * (x - mean)).reshape(blocks.shape)


def pca_init(vae, params, videos, motion_weight=1.0):
  """Set the linear patch paths to PCA of the pixel blocks of `videos` [B, T, H, W, 3].

  With the deep paths zero-initialised this makes the untrained VAE the best linear
  autoencoder of the data (colour and layout right from step 0); training then adds
  detail. The logvar half of the encoder map stays zero (posterior std from the offset).

  motion_weight > 1 makes it the best linear autoencoder under a norm that counts change
  within a block's 4 frames `motion_weight` times: plain PCA spends its components on the
  frames' mean, so a moving shape decodes still within each latent frame and jumps between
  them (docs/design.md, "Causal VAE"). Encoder z = V W (x - mean), decoder x = mean + W^-1 V^T z.
  """
  tf = vae.temporal_factor
  blocks = space_time_blocks(jnp.asarray(videos, jnp.float32), tf, vae.spatial_factor)
  blocks = blocks.reshape(-1, blocks.shape[-1])
  mean = blocks.mean(0)
  _, _, vt = jnp.linalg.svd(motion_weighting(blocks - mean, tf, motion_weight), full_matrices=False)
  basis = vt[: vae.latent_channels]  # [C, block], orthonormal in the weighted norm
  encode = motion_weighting(basis, tf, motion_weight)  # V W (W is symmetric)
  decode = motion_weighting(basis, tf, 1.0 / motion_weight)  # V W^-1
  enc = dict(params["encoder_shortcut"]["Dense_0"])
  enc["kernel"] = (
      enc["kernel"].at[:, : vae.latent_channels].set(encode.T).at[:, vae.latent_channels :].set(0.0)
  )
  enc["bias"] = enc["bias"].at[: vae.latent_channels].set(-mean @ encode.T).at[vae.latent_channels :].set(0.0)
  dec = {"kernel": decode, "bias": mean}
  return {**params, "encoder_shortcut": {"Dense_0": enc}, "decoder_shortcut": {"Dense_0": dec}}


class Encoder(nn.Module):
  out_channels: int
  base_channels: int
  channel_mult: tuple[int, ...]
  num_res_blocks: int
  temporal_downsample: tuple[bool, ...]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = CausalConv3d(self.base_channels * self.channel_mult[0], dtype=self.dtype)(x)
    for level, mult in enumerate(self.channel_mult):
      for _ in range(self.num_res_blocks):
        x = ResBlock(self.base_channels * mult, dtype=self.dtype)(x)
      if level < len(self.temporal_downsample):
        x = Downsample(self.temporal_downsample[level], dtype=self.dtype)(x)
    features = x.shape[-1]
    x = ResBlock(features, dtype=self.dtype)(x)  # middle blocks
    x = ResBlock(features, dtype=self.dtype)(x)
    x = nn.silu(FrameGroupNorm(self.dtype)(x))
    # Zero-initialised: the deep path starts as a residual on PatchShortcut's linear map.
    return CausalConv3d(self.out_channels, dtype=self.dtype, kernel_init=nn.initializers.zeros)(x)


class Decoder(nn.Module):
  base_channels: int
  channel_mult: tuple[int, ...]
  num_res_blocks: int
  temporal_downsample: tuple[bool, ...]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    features = self.base_channels * self.channel_mult[-1]
    x = CausalConv3d(features, dtype=self.dtype)(z)
    x = ResBlock(features, dtype=self.dtype)(x)  # middle blocks
    x = ResBlock(features, dtype=self.dtype)(x)
    for level in reversed(range(len(self.channel_mult))):
      for _ in range(self.num_res_blocks):
        x = ResBlock(self.base_channels * self.channel_mult[level], dtype=self.dtype)(x)
      if level > 0:
        x = Upsample(self.temporal_downsample[level - 1], dtype=self.dtype)(x)
    x = nn.silu(FrameGroupNorm(self.dtype)(x))
    return CausalConv3d(3, dtype=self.dtype, kernel_init=nn.initializers.zeros)(x)


class CausalVAE(nn.Module):
  """Video [B, 1 + 4k, H, W, 3] in [-1, 1] <-> latent [B, 1 + k, H/8, W/8, latent_channels].

  The compression factors follow the config: 2 ** (len(channel_mult) - 1) spatially
  and 2 ** sum(temporal_downsample) temporally.
  """

  latent_channels: int = 16
  base_channels: int = 64
  channel_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 1
  temporal_downsample: tuple[bool, ...] = (False, True, True)
  dtype: Any = jnp.float32  # compute dtype; params stay float32
  # The posterior starts narrow (std e^-4): with std ~1 at init the decoder is fed mostly
  # noise and learns the mean image long before the encoder learns to shrink the variance.
  logvar_offset: float = -8.0

  @property
  def spatial_factor(self) -> int:
    return 2 ** (len(self.channel_mult) - 1)

  @property
  def temporal_factor(self) -> int:
    return 2 ** sum(self.temporal_downsample)

  def setup(self):
    if len(self.temporal_downsample) != len(self.channel_mult) - 1:
      raise ValueError(
          f"temporal_downsample has {len(self.temporal_downsample)} entries; it needs one "
          f"per downsample, i.e. len(channel_mult) - 1 = {len(self.channel_mult) - 1}"
      )
    levels = (self.base_channels, self.channel_mult, self.num_res_blocks, self.temporal_downsample)
    self.encoder = Encoder(2 * self.latent_channels, *levels, dtype=self.dtype)
    self.decoder = Decoder(*levels, dtype=self.dtype)
    factors = (self.temporal_factor, self.spatial_factor)
    self.encoder_shortcut = PatchShortcut(*factors, 2 * self.latent_channels, dtype=self.dtype)
    self.decoder_shortcut = PatchShortcut(*factors, 3, decode=True, dtype=self.dtype)

  def encode(self, video):
    """Video -> (mean, logvar) of the diagonal Gaussian posterior, float32."""
    # While streaming, chunks after the first have 4m frames; encode_chunked
    # checks the whole video instead.
    check_video_shape(self, video.shape, check_frames=not _streaming(self))
    x = video.astype(self.dtype)
    moments = (self.encoder(x) + self.encoder_shortcut(x)).astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar + self.logvar_offset, *_LOGVAR_RANGE)

  def decode(self, z):
    """Latent [B, T', h, w, C] -> video [B, 1 + 4(T' - 1), 8h, 8w, 3], float32."""
    if z.ndim != 5 or z.shape[-1] != self.latent_channels:
      raise ValueError(f"latent must have shape [B, T, h, w, {self.latent_channels}], got {tuple(z.shape)}")
    z = z.astype(self.dtype)
    return (self.decoder(z) + self.decoder_shortcut(z)).astype(jnp.float32)

  def __call__(self, video, *, sample_rng=None):
    """Returns (recon, mean, logvar); decodes a posterior sample if sample_rng is given."""
    mean, logvar = self.encode(video)
    z = mean
    if sample_rng is not None:
      z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(sample_rng, mean.shape)
    return self.decode(z), mean, logvar


def check_video_shape(vae: CausalVAE, shape, *, check_frames: bool = True) -> None:
  """Raise one clear ValueError if `shape` is not a valid [B, 1 + 4k, H, W, 3] video."""
  if len(shape) != 5 or shape[-1] != 3:
    raise ValueError(f"video must have shape [B, T, H, W, 3], got {tuple(shape)}")
  _, t, h, w, _ = shape
  tf, sf = vae.temporal_factor, vae.spatial_factor
  if check_frames and (t - 1) % tf:
    raise ValueError(f"video has {t} frames; the causal VAE needs 1 + {tf}k frames")
  for name, size in (("height", h), ("width", w)):
    if size % sf:
      raise ValueError(f"{name} {size} is not divisible by {sf}")


def vae_loss(vae: CausalVAE, params, video, rng, *, kl_weight: float = 1e-6):
  """Reconstruction (L1 + MSE) + kl_weight * KL. Returns (loss, metrics)."""
  video = video.astype(jnp.float32)
  recon, mean, logvar = vae.apply({"params": params}, video, sample_rng=rng)
  err = recon - video
  mse = jnp.mean(err**2)
  l1 = jnp.mean(jnp.abs(err))
  kl = 0.5 * jnp.mean(mean**2 + jnp.exp(logvar) - 1.0 - logvar)
  # Named, already-weighted terms: perceptual / adversarial losses slot in here later.
  terms = {"l1": l1, "mse": mse, "kl": kl_weight * kl}
  loss = sum(terms.values())
  psnr = 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))  # peak-to-peak range of [-1, 1] is 2
  return loss, {"loss": loss, "recon": l1 + mse, "kl": kl, "psnr": psnr}


@functools.partial(jax.jit, static_argnums=(0, 1))
def stream_step(vae, method, params, cache, x):
  """One chunk with the causal cache: (output, next cache); compiled once per (chunk shape, cache
  present). Start with cache {}; `encode_chunked`, `decode_chunked` and eval-vae's streaming go
  through it."""
  out, state = vae.apply({"params": params, **cache}, x, method=method, mutable=[_CACHE])
  return out, {_CACHE: state[_CACHE]}


def _run_chunked(vae, params, x, method, chunk):
  """Apply `method` to x[:, :1], then to chunks of `chunk` time steps, carrying the cache."""
  out, cache = stream_step(vae, method, params, {}, x[:, :1])
  outs = [out]
  for start in range(1, x.shape[1], chunk):
    piece = x[:, start : start + chunk]
    n = piece.shape[1]
    if n < chunk:
      # Pad the last chunk at the end: causality keeps the kept outputs exact, and
      # a single chunk shape means a single compilation.
      piece = jnp.concatenate([piece, jnp.repeat(piece[:, -1:], chunk - n, axis=1)], axis=1)
    out, cache = stream_step(vae, method, params, cache, piece)
    outs.append(jax.tree.map(lambda o: o[:, : o.shape[1] * n // chunk], out))
  return jax.tree.map(lambda *o: jnp.concatenate(o, axis=1), *outs)


def encode_chunked(vae: CausalVAE, params, video, *, chunk_latents: int = 2):
  """Same as encode, but frame 0 alone then 4 * chunk_latents frames at a time."""
  if chunk_latents < 1:
    raise ValueError(f"chunk_latents must be >= 1, got {chunk_latents}")
  check_video_shape(vae, video.shape)
  return _run_chunked(vae, params, video, "encode", vae.temporal_factor * chunk_latents)


def decode_chunked(vae: CausalVAE, params, z, *, chunk_latents: int = 2):
  """Same as decode, but latent frame 0 alone then chunk_latents latent frames at a time."""
  if chunk_latents < 1:
    raise ValueError(f"chunk_latents must be >= 1, got {chunk_latents}")
  return _run_chunked(vae, params, z, "decode", chunk_latents)
