"""Models from config sections: the one place that turns config fields into modules."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from sora_jax.data.packing import empty_batch

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
  text = HashedWordEncoder(t.vocab_size, t.width, t.depth, t.num_heads)
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
  )


def dit_param_shapes(config):
  """The DiT's parameter tree as ShapeDtypeStructs (nothing is computed or allocated)."""
  x = empty_batch(1, 8, 1, patch_dim(config), config.model.text.max_len)
  t = jnp.zeros(x["grid"].shape[:2])
  args = (x["tokens"], x["segment_ids"], x["positions"], x["cond_mask"], t, x["text_ids"])
  init = lambda: build_dit(config).init(jax.random.key(0), *args)["params"]
  return nn.meta.unbox(jax.eval_shape(init))


def caption_ids(config, captions):
  """Captions -> int32 [N, max_len] ids for the configured text encoder."""
  return tokenize(captions, config.model.text.max_len, config.model.text.vocab_size)
