"""Small Linen layers with no config access: attention blocks, MLP, adaLN modulation."""
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from sora_jax.nn.attention import dot_product_attention
from sora_jax.nn.embeddings import apply_rope


def modulate(x, shift, scale):
  return x * (1.0 + scale) + shift


class Mlp(nn.Module):
  hidden: int
  out: int
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=self.kernel_init, name="fc1")(x)
    x = nn.gelu(x, approximate=True)
    return nn.Dense(self.out, dtype=self.dtype, kernel_init=self.kernel_init, name="fc2")(x)


class Attention(nn.Module):
  """Multi-head attention with optional QK RMSNorm and rotary embeddings.

  Self-attention when `context` is None; cross-attention to `context` otherwise. Masking is by
  segment ids (see nn.attention), so one call serves packed rows of many examples.
  """
  num_heads: int
  qk_norm: bool = True
  dtype: Any = jnp.float32
  implementation: str = "xla"

  @nn.compact
  def __call__(self, x, segment_ids, *, context=None, context_segment_ids=None, rope=None):
    width = x.shape[-1]
    head_dim = width // self.num_heads
    dense = lambda name: nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype,
                                         kernel_init=nn.initializers.xavier_uniform(), name=name)
    source = x if context is None else context
    q, k, v = dense("query")(x), dense("key")(source), dense("value")(source)
    if self.qk_norm:
      q = nn.RMSNorm(dtype=self.dtype, name="query_norm")(q)
      k = nn.RMSNorm(dtype=self.dtype, name="key_norm")(k)
    if rope is not None:
      q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    kv_ids = segment_ids if context is None else context_segment_ids
    out = dot_product_attention(q, k, v, segment_ids, kv_ids, implementation=self.implementation)
    return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype,
                           kernel_init=nn.initializers.xavier_uniform(), name="out")(out)
