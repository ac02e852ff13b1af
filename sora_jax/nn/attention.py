"""Attention over packed rows: one entry point, several implementations.

Tokens attend only to tokens with the same segment id, so several examples share a row
without seeing each other. `implementation="xla"` is the reference with an explicit mask;
faster kernels (cuDNN, TPU splash) plug in behind the same signature.
"""
import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "auto")


def segment_mask(q_segment_ids, kv_segment_ids):
  """[B, Lq], [B, Lk] -> bool [B, 1, Lq, Lk]: attend iff ids are equal."""
  return (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])[:, None]


def dot_product_attention(q, k, v, q_segment_ids, kv_segment_ids, *, implementation="xla"):
  """Segment-masked attention.

  q: [B, Lq, H, Dh]; k, v: [B, Lk, H, Dh]; segment ids int [B, Lq] / [B, Lk].
  A query whose segment has no key (padding) gets a uniform average instead of NaN; its
  output is never read by a real token, since real tokens only attend their own segment.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; choose from {IMPLEMENTATIONS}")
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  mask = segment_mask(q_segment_ids, kv_segment_ids)
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)
