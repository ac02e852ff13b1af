"""Attention over packed rows: one entry point, several implementations.

Tokens attend only to tokens with the same segment id, so several examples share a row
without seeing each other. Implementations (same answer on the same packed input):
  xla               reference with an explicit segment mask (any platform);
  splash            TPU Pallas splash attention with in-kernel segment masking;
  splash_interpret  the same kernel run by the Pallas interpreter (CPU tests);
  auto              splash on TPU, xla elsewhere.
The kernels are the only platform-specific code; they live here, behind this one function.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "splash", "splash_interpret", "auto")
SPLASH_BLOCK = 128  # sequence lengths are padded to this; larger blocks are used when they divide


def segment_mask(q_segment_ids, kv_segment_ids):
  """[B, Lq], [B, Lk] -> bool [B, 1, Lq, Lk]: attend iff ids are equal."""
  return (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])[:, None]


def dot_product_attention(q, k, v, q_segment_ids, kv_segment_ids, *, implementation="xla",
                          length_axis="length"):
  """Segment-masked attention.

  q: [B, Lq, H, Dh]; k, v: [B, Lk, H, Dh]; segment ids int [B, Lq] / [B, Lk].
  A query whose segment has no key (padding) gets a uniform average instead of NaN; its
  output is never read by a real token, since real tokens only attend their own segment.
  `length_axis` is the logical name of the query length (for kernels run per device).
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; choose from {IMPLEMENTATIONS}")
  if implementation == "auto":
    implementation = "splash" if jax.default_backend() == "tpu" else "xla"
  if implementation == "xla":
    return _xla_attention(q, k, v, q_segment_ids, kv_segment_ids)
  return _sharded_splash(q, k, v, q_segment_ids, kv_segment_ids, length_axis,
                         interpret=implementation == "splash_interpret")


def _xla_attention(q, k, v, q_segment_ids, kv_segment_ids):
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  logits = jnp.where(segment_mask(q_segment_ids, kv_segment_ids), logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def _sharded_splash(q, k, v, q_ids, kv_ids, length_axis, *, interpret):
  """Under a mesh, run the kernel per device with shard_map: queries keep their batch, length
  and head sharding (logical names as in nn.layers), keys/values are gathered along length."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return _splash(q, k, v, q_ids, kv_ids, interpret=interpret)
  batch, length, heads = (nn.logical_to_mesh_axes((name,))[0]
                           for name in ("batch", length_axis, "act_heads"))
  P = jax.sharding.PartitionSpec
  q_spec, kv_spec = P(batch, length, heads, None), P(batch, None, heads, None)
  fn = jax.shard_map(functools.partial(_splash, interpret=interpret), mesh=mesh,
                     in_specs=(q_spec, kv_spec, kv_spec, P(batch, length), P(batch, None)),
                     out_specs=q_spec, check_vma=False)
  return fn(q, k, v, q_ids, kv_ids)


def _pad_to_block(x, length, value=0):
  pad = [(0, 0)] * x.ndim
  pad[1] = (0, length - x.shape[1])
  return jnp.pad(x, pad, constant_values=value)


def _splash(q, k, v, q_ids, kv_ids, *, interpret):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

  b, lq, h, d = q.shape
  lk = k.shape[1]
  round_up = lambda n: -(-n // SPLASH_BLOCK) * SPLASH_BLOCK
  # Padded keys get segment -1, padded queries -2: they match nothing real and are sliced off.
  lq_pad, lk_pad = round_up(lq), round_up(lk)
  q = _pad_to_block(q, lq_pad)
  k, v = _pad_to_block(k, lk_pad), _pad_to_block(v, lk_pad)
  q_ids, kv_ids = _pad_to_block(q_ids, lq_pad, -2), _pad_to_block(kv_ids, lk_pad, -1)
  kernel = _splash_kernel(h, lq_pad, lk_pad, interpret)
  scale = d ** -0.5
  heads_first = lambda x: jnp.swapaxes(x, 1, 2)
  out = jax.vmap(lambda q, k, v, qi, ki: kernel(q, k, v, segment_ids=sk.SegmentIds(q=qi, kv=ki)))(
      heads_first(q * scale), heads_first(k), heads_first(v), q_ids, kv_ids)
  return heads_first(out)[:, :lq].astype(v.dtype)


def _splash_kernel(heads, lq, lk, interpret):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

  block = lambda n: next(s for s in (512, 256, SPLASH_BLOCK) if n % s == 0)
  bq, bk = block(lq), block(lk)
  sizes = sk.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq, block_kv_dkv=bk,
                        block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk)
  mask = sm.MultiHeadMask([sm.FullMask((lq, lk)) for _ in range(heads)])
  # Built per trace (its mask tables become constants of that trace); the mask processing is cached.
  return sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)
