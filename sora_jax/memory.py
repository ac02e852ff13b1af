"""Pre-flight memory estimate for sampling: a request that cannot fit is refused in one line
before XLA runs out of memory with a traceback.

From Pipeline.generate, once the rows are packed (c = the config):

  estimate = memory.sampling_bytes(
      rows=rows, row_length=row_length, width=c.model.width, num_heads=c.model.num_heads,
      mlp_ratio=c.model.mlp_ratio, patch_dim=build.patch_dim(c),
      caption_tokens=c.train.max_per_row * c.model.text.max_len, guidance=guidance != 1.0,
      videos=len(prompts), latent_shape=latent_shape, vae_base_channels=c.vae.base_channels,
      vae_channel_mult=tuple(c.vae.channel_mult), chunk_latents=c.sample.chunk_latents)
  memory.check_fits(estimate, f"sampling {width}x{height}")

The estimate is of the bytes one call adds to a loaded pipeline (weights are already resident),
for the xla attention path; the fused kernels (splash, cudnn) need less. The constants are
counts of live arrays, checked against peak RSS on CPU (docs/scripts/attention_memory.py).
"""

import os

import jax

from sora_jax.config import VAE_SPATIAL, VAE_TEMPORAL, ConfigError
from sora_jax.nn import attention

FLOAT = 4  # bytes: activations are float32 (a bfloat16 model needs less)
# Floats per token alive at once in one DiT block, in model widths: residual stream, normed
# input, q, k, v, attention output; the MLP's hidden layer adds 2 x mlp_ratio (before and after
# its activation).
BLOCK_WIDTHS = 6
# Copies of the [B, H, q, k] logits alive at once: the logits and the softmax weights (XLA fuses
# the mask into the first).
LOGIT_COPIES = 2
# Copies of one decoder chunk at full resolution, over its frames and the two cached ones a
# causal conv puts in front: the padded input, its three frame shifts stacked on channels, the
# output.
DECODER_COPIES = 5
# The decoded video as float32: the chunks, their concatenation, and to_uint8's temporary.
VIDEO_COPIES = 3
# What any call adds: the compiled sampler and decoder, XLA's working memory.
FIXED_BYTES = 1 << 28


def sampling_bytes(
    *,
    rows,
    row_length,
    width,
    num_heads,
    mlp_ratio,
    patch_dim,
    caption_tokens,
    guidance,
    videos,
    latent_shape,
    vae_base_channels,
    vae_channel_mult,
    chunk_latents,
):
  """Estimated peak bytes of one sampling call: rows x row_length tokens through the DiT (2 x rows
  with classifier-free guidance: both passes are one batch), then `videos` latents of
  latent_shape [T, h, w, C] decoded one by one in chunks of chunk_latents latent frames.

  The two phases do not overlap (the DiT's activations are gone when decoding starts): the peak
  is the larger one. The DiT phase is one block's activations, as the sampler holds one block's
  at a time, not the depth's.
  """
  batch = rows * (2 if guidance else 1)
  tokens = batch * row_length
  dit = tokens * (BLOCK_WIDTHS + 2 * mlp_ratio) * width * FLOAT
  heads = dict(batch=batch, heads=num_heads, lq=row_length)
  logits = max(_logits_bytes(**heads, lk=row_length), _logits_bytes(**heads, lk=caption_tokens))
  # The sampler's token arrays: noise, state, both predictions, the conditioning tokens.
  sampler = 6 * tokens * patch_dim * FLOAT
  t, h, w, _ = latent_shape
  frames, pixels = 1 + VAE_TEMPORAL * (t - 1), VAE_SPATIAL**2 * h * w
  # At full resolution the decoder holds the channels of its last upsample, then of level 0.
  channels = vae_base_channels * max(vae_channel_mult[:2])
  chunk_frames = 1 if t == 1 else VAE_TEMPORAL * chunk_latents  # frame 0 is decoded alone
  decoder = DECODER_COPIES * (chunk_frames + 2) * pixels * channels * FLOAT
  video = VIDEO_COPIES * frames * pixels * 3 * FLOAT
  kept = videos * frames * pixels * 3  # the uint8 videos
  return int(FIXED_BYTES + max(dit + logits + sampler, decoder + video) + kept)


def _logits_bytes(*, batch, heads, lq, lk):
  """The attention logits alive at once: the whole [B, H, Lq, Lk] on the dense path, one block
  of queries x keys on the blockwise one (nn.attention)."""
  if lq * lk > attention.DENSE_MAX_LOGITS:
    lq, lk = min(lq, attention.XLA_BLOCK), min(lk, attention.XLA_BLOCK)
  return LOGIT_COPIES * batch * heads * lq * lk * FLOAT


def available_bytes():
  """(bytes, where): free memory of the default device, or of the host on CPU."""
  device = jax.devices()[0]
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
      return stats["bytes_limit"] - stats.get("bytes_in_use", 0), f"the {device.device_kind}"
  try:
    with open("/proc/meminfo") as f:
      fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024, "this machine"
  except (OSError, KeyError):
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine"


def check_fits(estimate_bytes, what):
  """Raise ConfigError with one line if `what` (e.g. "sampling 4096x4096") needs more than the
  memory available now."""
  available, where = available_bytes()
  if estimate_bytes > available:
    raise ConfigError(
        f"{what} needs about {estimate_bytes / 1e9:.1f} GB (estimated); {where} has "
        f"{available / 1e9:.1f} GB available: ask for a smaller size"
    )
