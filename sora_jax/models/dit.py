"""Diffusion transformer over packed spacetime tokens (the contract of ARCHITECTURE.md).

Each row of the batch holds up to E examples, told apart by segment ids (0 = padding).
Per-example values (timestep, caption) reach tokens by gathering with segment ids, so an
example's output is the same alone in a row or packed with others.
"""

import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sora_jax.models.motion import MotionExtractor, MotionFuser, block_level
from sora_jax.nn.embeddings import rope_3d, separable_sincos, timestep_embedding
from sora_jax.nn.layers import Attention, Mlp, constrain, dense, layer_norm, modulate

ATTENTION_PATTERNS = ("full", "spatial", "temporal")
POSITION_EMBEDDINGS = ("rope", "sincos", "rope+sincos")
# Activation checkpointing per block: what the backward pass keeps instead of recomputing.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
MAX_EXAMPLES_PER_ROW = 2047  # keeps the temporal-pattern ids below 2**31
ACTIVATION_AXES = ("batch", "length", "act_embed")


def pattern_segment_ids(segment_ids, positions, pattern):
  """Attention patterns as segment ids: full 3D = example; spatial = (example, frame);
  temporal = (example, h, w). Padding (segment 0) stays 0 in every pattern."""
  t, h, w = positions[..., 0], positions[..., 1], positions[..., 2]
  if pattern == "full":
    return segment_ids
  if pattern == "spatial":
    return jnp.where(segment_ids > 0, segment_ids * (1 << 16) + t, 0)
  if pattern == "temporal":
    return jnp.where(segment_ids > 0, segment_ids * (1 << 20) + h * (1 << 10) + w, 0)
  raise ValueError(f"unknown attention pattern {pattern!r}; choose from {ATTENTION_PATTERNS}")


def gather_examples(values, segment_ids):
  """values [B, E, ...] -> [B, L, ...] by segment id; padding reads example 0 (masked later)."""
  index = jnp.clip(segment_ids - 1, 0, values.shape[1] - 1)
  index = index.reshape(index.shape + (1,) * (values.ndim - 2))
  return jnp.take_along_axis(values, index, axis=1)


def per_token_condition(values, segment_ids, cond_mask):
  """values [B, E, 2, F] (noisy, clean) -> [B, L, F]: clean entry for conditioning tokens."""
  b, e, _, f = values.shape
  index = jnp.clip(segment_ids - 1, 0, e - 1) * 2 + cond_mask.astype(jnp.int32)
  return jnp.take_along_axis(values.reshape(b, 2 * e, f), index[..., None], axis=1)


@dataclasses.dataclass(frozen=True)
class BlockSettings:
  """What every DiT block shares (one field for DiTBlock and BlockGroup alike)."""

  num_heads: int
  mlp_ratio: float = 4.0
  qk_norm: bool = True
  dtype: Any = jnp.float32
  attention_impl: str = "xla"
  logit_multiplier: float = 1.0


class DiTBlock(nn.Module):
  """adaLN-Zero block: self-attention, cross-attention to the caption, MLP."""

  settings: BlockSettings
  pattern: str = "full"

  @nn.compact
  def __call__(self, x, cond, segment_ids, cond_mask, attn_ids, rope, text, text_ids, motion=None):
    width = x.shape[-1]
    st = self.settings
    slots = cond.shape[1]  # E: example ids 1..E, each one contiguous run (see nn.attention)
    norm = lambda name: nn.LayerNorm(use_scale=False, use_bias=False, dtype=st.dtype, name=name)
    mod = dense(
        6 * width, ("embed", "modulation"), dtype=st.dtype, kernel_init=nn.initializers.zeros, name="adaLN"
    )(cond)
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(
        per_token_condition(mod, segment_ids, cond_mask), 6, axis=-1
    )
    attn = lambda name: Attention(
        st.num_heads,
        qk_norm=st.qk_norm,
        dtype=st.dtype,
        implementation=st.attention_impl,
        logit_multiplier=st.logit_multiplier,
        name=name,
    )
    h = modulate(norm("ln_self")(x), shift_a, scale_a)
    if motion is not None:  # Tora: a trajectory's features (models/motion.py)
      h = MotionFuser(st.dtype, name="motion_fuser")(h, motion)
    x = x + gate_a * attn("self_attn")(
        h,
        attn_ids,
        rope=rope,
        max_segments=slots if self.pattern == "full" else None,
    )
    x = x + attn("cross_attn")(
        layer_norm("ln_cross", dtype=st.dtype)(x),
        segment_ids,
        context=text,
        context_segment_ids=text_ids,
        max_segments=slots,
    )
    h = modulate(norm("ln_mlp")(x), shift_m, scale_m)
    mlp = Mlp(
        int(width * st.mlp_ratio),
        width,
        dtype=st.dtype,
        hidden_axes=("batch", "length", "act_mlp"),
        name="mlp",
    )
    return constrain(x + gate_m * mlp(h), ACTIVATION_AXES)


class BlockGroup(nn.Module):
  """One DiTBlock per attention pattern: the unit that `nn.scan` repeats."""

  patterns: Sequence[str]
  settings: BlockSettings

  @nn.compact
  def __call__(self, x, inputs, level_index):
    """inputs end with the motion features stacked [levels, B, L, width] (or None); level_index
    [len(patterns)]: which level each of this group's blocks reads."""
    cond, segment_ids, cond_mask, attn_ids, rope, text, text_ids, levels = inputs
    for j, pattern in enumerate(self.patterns):
      x = DiTBlock(self.settings, pattern, name=f"block_{j}")(
          x,
          cond,
          segment_ids,
          cond_mask,
          attn_ids[j],
          rope,
          text,
          text_ids,
          None if levels is None else levels[level_index[j]],
      )
    return x, None


class DiT(nn.Module):
  """Text-conditioned diffusion transformer over packed rows.

  Inputs (B rows, L tokens, E example slots, Lt caption tokens):
    tokens [B, L, patch_dim], segment_ids [B, L], positions [B, L, 3], cond_mask [B, L],
    timesteps [B, E] in [0, 1], text_ids [B, E, Lt] (ids for `text_encoder`; PAD = 0), and with
    a frozen encoder outside the model (text_encoder None) its output text_embeds [B, E, Lt, D];
    with a Tora adapter, motion [B, L, Dm] (data/trajectory.py; zeros: no trajectory), made into
    `motion_levels` features (models/motion.py: 1 shared by all blocks, or Tora's hierarchy).
  Output: [B, L, patch_dim] (velocity / eps / v prediction, per the objective).
  """

  patch_dim: int
  text_encoder: Optional[nn.Module]  # None: captions come in encoded (text_embeds)
  width: int = 256
  depth: int = 6
  num_heads: int = 4
  mlp_ratio: float = 4.0
  attention_patterns: Sequence[str] = ("full",)
  pos_emb: str = "rope"
  qk_norm: bool = True
  dtype: Any = jnp.float32
  attention_impl: str = "xla"
  remat: str = "none"
  scan_layers: bool = False  # nn.scan over groups of len(attention_patterns) blocks
  long_skips: bool = False  # U-ViT: block i's output joins the input of block depth-1-i
  logit_multiplier: float = 1.0
  motion_levels: int = 1  # Tora: the motion extractor's levels, each feeding depth / levels blocks

  @nn.compact
  def __call__(
      self, tokens, segment_ids, positions, cond_mask, timesteps, text_ids, text_embeds=None, motion=None
  ):
    b, e, lt = text_ids.shape
    if self.text_encoder is None:
      if text_embeds is None:
        raise ValueError("this DiT reads encoded captions: pass text_embeds (a frozen encoder's output)")
      text, text_mask = text_embeds.astype(self.dtype), text_ids != 0
    else:
      text, text_mask = self.text_encoder(text_ids.reshape(b * e, lt))
      text = text.reshape(b, e, lt, -1)
      text_mask = text_mask.reshape(b, e, lt)
    # Caption tokens of example e carry segment id e + 1: cross-attention is block diagonal.
    text_ids_flat = jnp.where(text_mask, jnp.arange(1, e + 1)[None, :, None], 0).reshape(b, e * lt)
    pooled = (text * text_mask[..., None]).sum(2) / jnp.maximum(text_mask.sum(2, keepdims=True), 1)
    context = dense(self.width, ("text_embed", "embed"), dtype=self.dtype, name="text_proj")(
        text.reshape(b, e * lt, -1)
    )

    def embed_time(t):
      h = timestep_embedding(t, self.width).astype(self.dtype)
      return Mlp(self.width, self.width, dtype=self.dtype, name="time_mlp")(h)

    text_cond = Mlp(self.width, self.width, dtype=self.dtype, in_axis="text_embed", name="text_pool_mlp")(
        pooled
    )
    # Slot 0: the example's noise level; slot 1: clean (t = 0), for conditioning tokens.
    times = jnp.stack([timesteps, jnp.zeros_like(timesteps)], axis=2)
    cond = nn.silu(embed_time(times) + text_cond[:, :, None])

    x = dense(self.width, ("patch", "embed"), dtype=self.dtype, name="patch_embed")(tokens.astype(self.dtype))
    x = constrain(x, ACTIVATION_AXES)
    rope = None
    if "sincos" in self.pos_emb:
      x = x + separable_sincos(positions, self.width).astype(self.dtype)
    if "rope" in self.pos_emb:
      rope = rope_3d(positions, self.width // self.num_heads)
    patterns = tuple(self.attention_patterns)
    inputs = (
        cond,
        segment_ids,
        cond_mask,
        tuple(pattern_segment_ids(segment_ids, positions, p) for p in patterns),
        rope,
        context,
        text_ids_flat,
    )
    levels = None
    if motion is not None:
      levels = MotionExtractor(self.width, self.motion_levels, self.dtype, name="motion_extractor")(motion)
    level_of = [block_level(i, self.depth, self.motion_levels) for i in range(self.depth)]
    settings = BlockSettings(
        self.num_heads, self.mlp_ratio, self.qk_norm, self.dtype, self.attention_impl, self.logit_multiplier
    )
    policy = REMAT_POLICIES[self.remat]
    if self.scan_layers:
      # One traced group of len(patterns) blocks, scanned: compile time and the backward pass's
      # memory schedule stay those of one group, whatever the depth.
      group = BlockGroup if self.remat == "none" else nn.remat(BlockGroup, policy=policy, prevent_cse=False)
      scanned = nn.scan(
          group,
          variable_axes={"params": 0},
          split_rngs={"params": True},
          in_axes=(nn.broadcast, 0),  # each block's motion level: scanned (the levels broadcast, once each)
          length=self.depth // len(patterns),
          metadata_params={nn.PARTITION_NAME: "layers"},
      )
      stacked = None if levels is None else jnp.stack(levels)
      level_index = jnp.asarray(level_of, jnp.int32).reshape(-1, len(patterns))
      x, _ = scanned(patterns, settings, name="blocks")(x, (*inputs, stacked), level_index)
    else:
      block = DiTBlock if self.remat == "none" else nn.remat(DiTBlock, policy=policy)
      skips = []
      for i in range(self.depth):
        if self.long_skips and i >= self.depth // 2:
          x = self._join_skip(x, skips.pop(), i)
        attn_ids = inputs[3][i % len(patterns)]
        x = block(settings, patterns[i % len(patterns)], name=f"block_{i}")(
            x, *inputs[:3], attn_ids, *inputs[4:], None if levels is None else levels[level_of[i]]
        )
        if self.long_skips and i < self.depth // 2:
          skips.append(x)
    final = dense(
        2 * self.width,
        ("embed", "modulation"),
        dtype=self.dtype,
        kernel_init=nn.initializers.zeros,
        name="final_adaLN",
    )(cond)
    shift, scale = jnp.split(per_token_condition(final, segment_ids, cond_mask), 2, axis=-1)
    x = modulate(
        nn.LayerNorm(use_scale=False, use_bias=False, dtype=self.dtype, name="ln_final")(x), shift, scale
    )
    out = dense(
        self.patch_dim, ("embed", "patch"), dtype=self.dtype, kernel_init=nn.initializers.zeros, name="final"
    )(x)
    return out.astype(jnp.float32)

  def _join_skip(self, x, skip, i):
    """U-ViT's long skip: Linear([x, skip]). Initialised to pass x through (identity on x, zero
    on the skip), so the model starts as the one without skips, as adaLN-Zero blocks do."""
    width = x.shape[-1]
    init = lambda key, shape, dtype=jnp.float32: jnp.concatenate(
        [jnp.eye(width, dtype=dtype), jnp.zeros((width, width), dtype)]
    )
    return dense(width, ("mlp", "embed"), dtype=self.dtype, kernel_init=init, name=f"skip_{i}")(
        jnp.concatenate([x, skip], axis=-1)
    )
