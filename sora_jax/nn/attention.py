"""Attention over packed rows: one entry point, several implementations.

Tokens attend only to tokens with the same segment id, so several examples share a row
without seeing each other. Implementations (same answer on the same packed input):
  xla               reference with an explicit segment mask (any platform): dense logits for short
                    rows, blocks with an online softmax (memory linear in length) for long ones;
  splash            TPU Pallas splash attention: in-kernel segment masking, and block masks from
                    the segment ids so blocks across two examples are skipped;
  splash_interpret  the same kernel run by the Pallas interpreter (CPU tests);
  cudnn             cuDNN fused flash attention in its packed (ragged) layout (Hopper or newer):
                    per-segment offsets and lengths, so cross-segment work is never done;
  auto              splash on TPU, cudnn on Hopper or newer GPUs, xla elsewhere.
The kernels are the only platform-specific code; they live here, behind this one function.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "splash", "splash_interpret", "cudnn", "auto")
SPLASH_BLOCK = 128  # sequence lengths are padded to this; larger blocks are used when they divide
# The xla path materialises [B, H, Lq, Lk] logits up to this Lq * Lk (a 2048-token row; training
# rows stay on the fast dense einsum); longer rows go through blocks of XLA_BLOCK queries x keys.
DENSE_MAX_LOGITS = 1 << 22
XLA_BLOCK = 512


def segment_mask(q_segment_ids, kv_segment_ids):
  """[B, Lq], [B, Lk] -> bool [B, 1, Lq, Lk]: attend iff ids are equal."""
  return (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])[:, None]


def dot_product_attention(q, k, v, q_segment_ids, kv_segment_ids, *, implementation="xla",
                          length_axis="length", max_segments=None):
  """Segment-masked attention.

  q: [B, Lq, H, Dh]; k, v: [B, Lk, H, Dh]; segment ids int [B, Lq] / [B, Lk].
  A query whose segment has no key (padding) gets a uniform average instead of NaN (zero with
  cudnn); its output is never read by a real token, since real tokens only attend their own
  segment. `length_axis` is the logical name of the query length (for kernels run per device).
  max_segments: set when the ids are example slots 1..max_segments, each one contiguous run in
  slot order on both sides (packed rows, and captions); cudnn's packed layout needs that and
  uses xla for other patterns (e.g. temporal-only attention, whose ids interleave).
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; choose from {IMPLEMENTATIONS}")
  if implementation == "auto":
    implementation = _auto()
  if implementation == "cudnn" and max_segments is not None:
    kernel = functools.partial(_cudnn, max_segments=max_segments)
  elif implementation in ("splash", "splash_interpret"):
    kernel = functools.partial(_splash, interpret=implementation == "splash_interpret")
  else:
    return _xla_attention(q, k, v, q_segment_ids, kv_segment_ids, length_axis)
  return _per_device(kernel, q, k, v, q_segment_ids, kv_segment_ids, length_axis)


def _auto():
  platform = jax.default_backend()
  if platform == "tpu":
    return "splash"
  if platform == "gpu" and float(getattr(jax.devices()[0], "compute_capability", 0)) >= 9.0:
    return "cudnn"  # the packed layout needs Hopper
  return "xla"


def _xla_attention(q, k, v, q_segment_ids, kv_segment_ids, length_axis):
  if q.shape[1] * k.shape[1] <= DENSE_MAX_LOGITS:
    return _dense_attention(q, k, v, q_segment_ids, kv_segment_ids)
  # Per device under a mesh, as the kernels: the blocks then split each device's own queries.
  kernel = functools.partial(_blockwise_attention, block=XLA_BLOCK)
  return _per_device(kernel, q, k, v, q_segment_ids, kv_segment_ids, length_axis)


def _dense_attention(q, k, v, q_segment_ids, kv_segment_ids):
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  logits = jnp.where(segment_mask(q_segment_ids, kv_segment_ids), logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def _blockwise_attention(q, k, v, q_ids, kv_ids, *, block):
  """_dense_attention's answer in memory linear in length, backward pass included (one block x
  block tile of logits at a time): a map over query blocks, each an online softmax (flash
  attention) over key blocks.

  Masked logits are finfo.min as in the dense path, so a query with no key in its segment gets
  the same uniform average over the Lk real keys; the keys padded on to fill the last block are
  -inf and weigh nothing. The running max starts at finfo.min, so an all-padding block adds 0.
  """
  b, lq, h, d = q.shape
  lk = k.shape[1]
  bq, bk = min(block, lq), min(block, lk)
  nq, nk = -(-lq // bq), -(-lk // bk)
  # [B, n * blk, ...] -> [n, B, blk, ...]: blocks on the leading axis, for map and scan.
  blocks = lambda x, n, blk: jnp.moveaxis(_pad_to_block(x, n * blk).reshape((b, n, blk) + x.shape[2:]), 1, 0)
  k_blocks, v_blocks, kv_id_blocks = (blocks(x, nk, bk) for x in (k, v, kv_ids))
  real_keys = (jnp.arange(nk * bk) < lk).reshape(nk, bk)
  scale = d ** -0.5
  lowest = jnp.finfo(jnp.float32).min

  def query_block(q_blk, q_id_blk):
    def key_block(carry, xs):
      top, total, acc = carry  # running max and sum of exp [B, H, bq]; weighted values [B, H, bq, D]
      k_blk, v_blk, kv_id_blk, real = xs
      logits = jnp.einsum("bqhd,bkhd->bhqk", q_blk, k_blk, preferred_element_type=jnp.float32) * scale
      match = (q_id_blk[:, :, None] == kv_id_blk[:, None, :])[:, None]
      logits = jnp.where(real, jnp.where(match, logits, lowest), -jnp.inf)
      # The answer does not depend on the max (it cancels): no gradient through it.
      new_top = jax.lax.stop_gradient(jnp.maximum(top, logits.max(-1)))
      weights = jnp.exp(logits - new_top[..., None])
      rescale = jnp.exp(top - new_top)
      acc = acc * rescale[..., None] + jnp.einsum("bhqk,bkhd->bhqd", weights.astype(v.dtype), v_blk,
                                                  preferred_element_type=jnp.float32)
      return (new_top, total * rescale + weights.sum(-1), acc), None

    init = (jnp.full((b, h, bq), lowest), jnp.zeros((b, h, bq)), jnp.zeros((b, h, bq, d)))
    # Recomputed in the backward pass rather than saved: saving each block's weights would bring
    # back the O(Lq * Lk) memory this avoids.
    step = jax.checkpoint(key_block, prevent_cse=False)
    (_, total, acc), _ = jax.lax.scan(step, init, (k_blocks, v_blocks, kv_id_blocks, real_keys))
    return jnp.swapaxes(acc / total[..., None], 1, 2)  # total >= 1: the top key adds exp(0)

  out = jax.lax.map(lambda xs: jax.checkpoint(query_block, prevent_cse=False)(*xs),
                    (blocks(q, nq, bq), blocks(q_ids, nq, bq)))
  return jnp.moveaxis(out, 0, 1).reshape(b, nq * bq, h, d)[:, :lq].astype(v.dtype)


def _per_device(kernel, q, k, v, q_ids, kv_ids, length_axis):
  """Under a mesh, run the kernel per device with shard_map: queries keep their batch, length
  and head sharding (logical names as in nn.layers), keys/values are gathered along length.
  Each device's segment ids describe its own query chunk, so the kernels need no global view."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return kernel(q, k, v, q_ids, kv_ids)
  batch, length, heads = (nn.logical_to_mesh_axes((name,))[0]
                           for name in ("batch", length_axis, "act_heads"))
  P = jax.sharding.PartitionSpec
  q_spec, kv_spec = P(batch, length, heads, None), P(batch, None, heads, None)
  fn = jax.shard_map(kernel, mesh=mesh,
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
  sizes, kernel_options = _splash_kernel_options(h, lq_pad, lk_pad, interpret)

  def one_row(q, k, v, qi, ki):
    masks = segment_block_masks(qi, ki, block_q=sizes.block_q, block_kv=sizes.block_kv)
    kernel = sk.SplashAttentionKernel.tree_unflatten(kernel_options, masks)
    return kernel(q, k, v, segment_ids=sk.SegmentIds(q=qi, kv=ki))

  heads_first = lambda x: jnp.swapaxes(x, 1, 2)
  scale = d ** -0.5
  out = jax.vmap(one_row)(heads_first(q * scale), heads_first(k), heads_first(v), q_ids, kv_ids)
  return heads_first(out)[:, :lq].astype(v.dtype)


def _splash_kernel_options(heads, lq, lk, interpret):
  """(block sizes, the kernel's static options) for these lengths."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

  block = lambda n: next(s for s in (512, 256, SPLASH_BLOCK) if n % s == 0)
  bq, bk = block(lq), block(lk)
  sizes = sk.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq, block_kv_dkv=bk,
                        block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk)
  # A full-mask kernel only to read its static options; the block masks come from the data.
  template = sk.make_splash_mha(sm.MultiHeadMask([sm.FullMask((lq, lk))] * heads), block_sizes=sizes,
                                head_shards=1, q_seq_shards=1, interpret=interpret)
  return sizes, template.tree_flatten()[1]


def segment_block_masks(q_ids, kv_ids, *, block_q, block_kv):
  """Splash's (forward, dq, dkv) block masks for one row, from its segment ids [Lq], [Lk].

  A (query block, key block) pair is computed only if the two blocks' id ranges overlap; every
  matching pair of ids lies in such a pair, so nothing needed is skipped, and with contiguous
  segments (packed examples, frames) the pairs across two examples are skipped. Negative ids
  (the kernel's length padding) are left out of the ranges. Visited blocks are "full" (2): the
  kernel masks by segment id inside them.
  """
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask_info as mi

  def ranges(ids, block):
    ids = ids.reshape(-1, block)
    real = ids >= 0
    info = jnp.iinfo(jnp.int32)
    return (jnp.min(jnp.where(real, ids, info.max), -1), jnp.max(jnp.where(real, ids, info.min), -1))

  (q_lo, q_hi), (kv_lo, kv_hi) = ranges(q_ids, block_q), ranges(kv_ids, block_kv)
  visit = (q_lo[:, None] <= kv_hi[None, :]) & (kv_lo[None, :] <= q_hi[:, None])  # [q blocks, kv blocks]
  # A query block with no key block would divide by a zero softmax sum (NaN, which reaches real
  # tokens through zero attention weights in the next layer): it visits block 0, fully masked,
  # and gets the kernel's finite masked-row output as before.
  visit = visit.at[:, 0].set(visit[:, 0] | ~visit.any(1))
  block_mask = jnp.where(visit, 2, 0).astype(jnp.int8)[None]

  # These tables live in the TPU's small scalar memory: the narrowest integer type that holds them.
  index_type = jnp.int16 if max(visit.shape) <= jnp.iinfo(jnp.int16).max else jnp.int32

  def info(axis):
    """Tables for a kernel whose inner grid loop walks `axis` of `visit`: a skipped step fetches
    the block the next computed step needs (the last computed one after the end), so skipping
    costs no extra copies; the pipeline does not copy a block it already holds."""
    blocks = jnp.arange(visit.shape[axis]).reshape((-1, 1) if axis == 0 else (1, -1))
    ahead = jax.lax.cummin(jnp.where(visit, blocks, visit.shape[axis]), axis=axis, reverse=True)
    behind = jax.lax.cummax(jnp.where(visit, blocks, -1), axis=axis)
    next_block = jnp.where(ahead < visit.shape[axis], ahead, jnp.maximum(behind, 0))
    return mi.MaskInfo(data_next=next_block.astype(index_type)[None], mask_next=None,
                       block_mask=block_mask, partial_mask_blocks=None, q_sequence=None, is_dynamic_mask=True)

  forward = info(axis=1)  # forward and dq walk key blocks per query block
  return forward, forward, info(axis=0)  # dkv walks query blocks per key block


def ragged_layout(q_ids, kv_ids, max_segments):
  """Slot ids (1..M, each one contiguous run in slot order, 0 = padding) of queries [B, Lq] and
  keys [B, Lk] -> cuDNN's packed layout: per row the start offset and length of each segment,
  int32 (offsets [B, M + 1], lengths [B, M]), -1 after the last. A slot counts only if both
  sides hold it (sampling gives unused slots a null caption), so query and key segments pair up
  by order as cuDNN pairs them."""
  slots = jnp.arange(1, max_segments + 1, dtype=q_ids.dtype)
  hits = lambda ids: ids[:, None, :] == slots[None, :, None]                  # [B, M, L]
  q_hits, kv_hits = hits(q_ids), hits(kv_ids)
  used = q_hits.any(-1) & kv_hits.any(-1)
  # Used slots first, in slot order (a stable sort on "unused").
  order = jnp.argsort(~used, axis=-1, stable=True)
  take = lambda x: jnp.take_along_axis(x, order, axis=-1)
  used = take(used)

  def layout(hits):
    lengths = jnp.where(used, take(hits.sum(-1).astype(jnp.int32)), -1)
    offsets = jnp.where(used, take(jnp.argmax(hits, axis=-1).astype(jnp.int32)), -1)
    return jnp.pad(offsets, ((0, 0), (0, 1)), constant_values=-1), lengths

  return layout(q_hits), layout(kv_hits)


def _cudnn(q, k, v, q_ids, kv_ids, *, max_segments):
  # JAX's packed-layout entry point is not public API yet (jax.nn.dot_product_attention takes
  # only one length per row); it is used here and nowhere else.
  from jax._src.cudnn.fused_attention_stablehlo import MaskType
  from jax._src.cudnn.fused_attention_stablehlo import dot_product_attention as cudnn_attention

  (q_offsets, q_lengths), (kv_offsets, kv_lengths) = ragged_layout(q_ids, kv_ids, max_segments)
  dtype = q.dtype if q.dtype in (jnp.bfloat16, jnp.float16) else jnp.bfloat16  # cuDNN: 16-bit only
  # Tokens outside every segment are zeroed on the way in and out: the kernel leaves them (and
  # their gradients) undefined.
  q_in = (q_ids > 0)[..., None, None]
  kv_in = (kv_ids > 0)[..., None, None]
  q, k, v = jnp.where(q_in, q, 0), jnp.where(kv_in, k, 0), jnp.where(kv_in, v, 0)
  out = cudnn_attention(q.astype(dtype), k.astype(dtype), v.astype(dtype), q_seqlen=q_lengths,
                        kv_seqlen=kv_lengths, q_offsets=q_offsets, kv_offsets=kv_offsets,
                        scale=q.shape[-1] ** -0.5, mask_type=MaskType.PADDING, qkv_layout="BTNH")
  return jnp.where(q_in, out, 0).astype(v.dtype)
