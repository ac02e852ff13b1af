"""Small Linen layers with no config access: attention blocks, MLP, adaLN modulation.

Every parameter carries logical axis names and block-boundary activations are constrained by
logical names; parallel/rules.py maps them to mesh axes (outside a mesh they are no-ops).
"""

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from sora_jax.nn.attention import dot_product_attention
from sora_jax.nn.embeddings import apply_rope

XAVIER = nn.initializers.xavier_uniform()


def named(init, axes):
  """An initializer whose parameter carries logical axis names."""
  return nn.with_logical_partitioning(init, tuple(axes))


def _bias_axes(axes):
  # Bias vectors are tiny: replicate the model-width ones rather than FSDP-shard them.
  return tuple("norm" if a == "embed" else a for a in axes)


def dense(features, axes, *, dtype, name, kernel_init=XAVIER):
  """nn.Dense with a kernel named `axes` (input, output) and a bias named like the output."""
  return nn.Dense(
      features,
      dtype=dtype,
      name=name,
      kernel_init=named(kernel_init, axes),
      bias_init=named(nn.initializers.zeros_init(), _bias_axes(axes[1:])),
  )


def layer_norm(name, *, dtype, affine=True):
  return nn.LayerNorm(
      use_scale=affine,
      use_bias=affine,
      dtype=dtype,
      name=name,
      scale_init=named(nn.initializers.ones_init(), ("norm",)),
      bias_init=named(nn.initializers.zeros_init(), ("norm",)),
  )


def constrain(x, axes):
  """Sharding constraint by logical names (no-op without a mesh and rules)."""
  return nn.with_logical_constraint(x, tuple(axes))


def modulate(x, shift, scale):
  return x * (1.0 + scale) + shift


class Mlp(nn.Module):
  hidden: int
  out: int
  dtype: Any = jnp.float32
  kernel_init: Callable = XAVIER
  in_axis: str = "embed"
  hidden_axes: Optional[Sequence[str]] = None  # logical names of the hidden activation

  @nn.compact
  def __call__(self, x):
    x = dense(self.hidden, (self.in_axis, "mlp"), dtype=self.dtype, kernel_init=self.kernel_init, name="fc1")(
        x
    )
    x = nn.gelu(x, approximate=True)
    if self.hidden_axes is not None:
      x = constrain(x, self.hidden_axes)
    return dense(self.out, ("mlp", "embed"), dtype=self.dtype, kernel_init=self.kernel_init, name="fc2")(x)


class Attention(nn.Module):
  """Multi-head attention with optional QK RMSNorm and rotary embeddings.

  Self-attention when `context` is None; cross-attention to `context` otherwise. Masking is by
  segment ids (see nn.attention), so one call serves packed rows of many examples. Queries keep
  the `seq_axis` sharding; keys and values are gathered (`kv_length` is unsharded), which is
  context parallelism by all-gathered K/V and stays exact on packed rows.
  """

  num_heads: int
  qk_norm: bool = True
  dtype: Any = jnp.float32
  implementation: str = "xla"
  seq_axis: str = "length"
  logit_multiplier: float = 1.0  # on queries: muP's 1/d logits from the kernels' 1/sqrt(d)

  @nn.compact
  def __call__(self, x, segment_ids, *, context=None, context_segment_ids=None, rope=None, max_segments=None):
    width = x.shape[-1]
    head_dim = width // self.num_heads
    # Projections keep heads flattened into one axis, so `tensor` shards whole heads.
    heads = lambda a: a.reshape(a.shape[:-1] + (self.num_heads, head_dim))
    proj = lambda name, a: heads(dense(width, ("embed", "heads"), dtype=self.dtype, name=name)(a))
    source = x if context is None else context
    q, k, v = proj("query", x), proj("key", source), proj("value", source)
    if self.qk_norm:
      norm = lambda name: nn.RMSNorm(
          dtype=self.dtype, name=name, scale_init=named(nn.initializers.ones_init(), ("kv",))
      )
      q, k = norm("query_norm")(q), norm("key_norm")(k)
    if rope is not None:
      q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    if self.logit_multiplier != 1.0:
      q = q * self.logit_multiplier
    q = constrain(q, ("batch", self.seq_axis, "act_heads", "kv"))
    k, v = (constrain(a, ("batch", "kv_length", "act_heads", "kv")) for a in (k, v))
    kv_ids = segment_ids if context is None else context_segment_ids
    out = dot_product_attention(
        q,
        k,
        v,
        segment_ids,
        kv_ids,
        implementation=self.implementation,
        length_axis=self.seq_axis,
        max_segments=max_segments,
    )
    out = out.reshape(out.shape[:-2] + (width,))
    return dense(width, ("heads", "embed"), dtype=self.dtype, name="out")(out)
