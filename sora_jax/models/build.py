"""Models from config sections: the one place that turns config fields into modules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.data.packing import empty_batch
from sora_jax.data.trajectory import motion_dim

from sora_jax.models.dit import DiT
from sora_jax.models.text import HashedWordEncoder, tokenize
from sora_jax.models.vae import CausalVAE
from sora_jax.scaling.mup import attention_logit_multiplier


def build_vae(vae_cfg):
  return CausalVAE(
      latent_channels=vae_cfg.latent_channels,
      base_channels=vae_cfg.base_channels,
      channel_mult=tuple(vae_cfg.channel_mult),
      num_res_blocks=vae_cfg.num_res_blocks,
      temporal_downsample=tuple(vae_cfg.temporal_downsample),
  )


def patch_dim(config):
  pt, ph, pw = config.model.patch
  return pt * ph * pw * config.vae.latent_channels


def build_dit(config):
  m, t = config.model, config.model.text
  # A frozen encoder runs beside the DiT (its output comes in as text_embeds): no text module.
  text = HashedWordEncoder(t.vocab_size, t.width, t.depth, t.num_heads) if t.kind == "hashed" else None
  return DiT(
      patch_dim(config),
      text,
      width=m.width,
      depth=m.depth,
      num_heads=m.num_heads,
      mlp_ratio=m.mlp_ratio,
      attention_patterns=tuple(m.attention_patterns),
      pos_emb=m.pos_emb,
      qk_norm=m.qk_norm,
      attention_impl=m.attention_impl,
      dtype=jnp.dtype(m.dtype),
      remat=m.remat,
      scan_layers=m.scan_layers,
      long_skips=m.long_skips,
      logit_multiplier=attention_logit_multiplier(m),
      motion_levels=config.adapter.levels if config.adapter.kind == "tora" else 1,
  )


def dit_param_shapes(config):
  """The DiT's parameter tree as ShapeDtypeStructs (nothing is computed or allocated)."""
  # A Tora adapter's modules are the DiT's when merged in (an export of it): traced with motion.
  motion = motion_dim(config) if config.adapter.kind == "tora" else None
  x = empty_batch(1, 8, 1, patch_dim(config), config.model.text.max_len, text_dim(config), motion_dim=motion)
  t = jnp.zeros(x["grid"].shape[:2])
  args = (x["tokens"], x["segment_ids"], x["positions"], x["cond_mask"], t, *condition_inputs(x))
  init = lambda: build_dit(config).init(jax.random.key(0), *args)["params"]
  return nn.meta.unbox(jax.eval_shape(init))


def condition_inputs(batch):
  """The DiT's per-call conditioning from a (packed) batch: (text_ids, text_embeds or None, motion
  or None), what follows the timesteps in its arguments."""
  return batch["text_ids"], batch.get("text_embeds"), batch.get("motion")


def frozen_encoder(config):
  """The run's frozen pretrained encoder (loaded once per process), or None for the hashed one."""
  t = config.model.text
  if t.kind == "hashed":
    return None
  from sora_jax.models.frozen_text import frozen_text

  return frozen_text(t.path, t.max_len, t.dtype, t.embed_dtype)


def text_dim(config):
  """Width of text_embeds in the batch (the frozen encoder's d_model; its weights are not
  read), or None when the DiT encodes its own ids."""
  frozen = frozen_encoder(config)
  return None if frozen is None else frozen.dim


def caption_ids(config, captions):
  """Captions -> int32 [N, max_len] ids for the configured text encoder."""
  frozen = frozen_encoder(config)
  if frozen is not None:
    return frozen.ids(captions)
  return tokenize(captions, config.model.text.max_len, config.model.text.vocab_size)


def caption_tokens(config, captions):
  """How many tokens each caption takes in the configured encoder before truncation (counted up
  to 4x model.text.max_len): captions over max_len lose their end when encoded."""
  long = 4 * config.model.text.max_len
  frozen = frozen_encoder(config)
  ids = (
      frozen.tokenizer(captions, long)
      if frozen is not None
      else tokenize(captions, long, config.model.text.vocab_size)
  )
  return [int(n) for n in np.count_nonzero(ids, axis=-1)]


def null_text(config, shape):
  """Guidance's empty caption as the DiT's (text_ids, text_embeds or None), broadcast to ids
  of `shape` [..., Lt]: encoded once, whatever the batch."""
  ids = jnp.asarray(caption_ids(config, [""])[0])
  frozen = frozen_encoder(config)
  embeds = None
  if frozen is not None:
    embeds = jnp.broadcast_to(frozen.embed(ids), (*shape, frozen.dim))
  return jnp.broadcast_to(ids, shape), embeds


def with_text_embeds(config, batch, shardings=None):
  """`batch` with `text_embeds` computed on device by the frozen encoder where it has none
  (not cached), laid out as shardings["text_embeds"] if given; unchanged for the hashed
  encoder."""
  frozen = frozen_encoder(config)
  if frozen is None or "text_embeds" in batch:
    return batch
  embeds = frozen.embed(batch["text_ids"])
  if shardings is not None:
    embeds = jax.device_put(embeds, shardings["text_embeds"])
  return {**batch, "text_embeds": embeds}
