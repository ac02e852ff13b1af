"""Tora's motion path inside the DiT: per-token motion features and the motion-guidance fuser.

`MotionExtractor` turns each token's motion input (data/trajectory.py's motion tokens, zeros for
an example without a trajectory) into features of the model's width: one shared by every block,
or, with `levels` > 1, Tora's hierarchical extractor, a chain of residual levels whose k-th
output feeds the k-th of `levels` equal runs of blocks (deeper blocks read deeper features, as
Tora gives each DiT layer its own level). Every block's `MotionFuser` then applies adaptive
normalisation, Tora's best of its three fusers:

  h <- h + GN(h) * gamma(m) + beta(m)

on the block's self-attention input, after its norm and adaLN modulation. gamma and beta come
from zero-initialised layers, so at init the model is the base exactly; no layer has a bias,
so a token with zero motion input is left exactly as the base has it, whatever the training.
Everything is per token: a packed row mixing examples with and without trajectories gives each
what it gives alone.
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sora_jax.nn.layers import XAVIER, named

GROUPS = 32  # the fuser's GroupNorm groups over the width (fewer: see fuser_groups)


def group_norm(h, groups):
  """Per-token GroupNorm without affine: each token's channels in `groups` groups, normalised
  (flax's nn.GroupNorm pools over every non-batch axis: here over the tokens of other examples)."""
  shape = h.shape
  g = h.astype(jnp.float32).reshape(*shape[:-1], groups, shape[-1] // groups)
  g = (g - g.mean(-1, keepdims=True)) * jnp.reciprocal(jnp.sqrt(g.var(-1, keepdims=True) + 1e-6))
  return g.reshape(shape).astype(h.dtype)


def fuser_groups(width):
  """The fuser's GroupNorm groups at `width`: gcd(GROUPS, width), unless that leaves one channel
  a group (width <= 32), whose norm is always 0 and would leave gamma dead: then 2 channels a
  group."""
  groups = math.gcd(GROUPS, width)
  return groups if width // groups >= 2 else max(1, width // 2)


def _dense(features, axes, dtype, name, init=XAVIER):
  return nn.Dense(features, use_bias=False, dtype=dtype, kernel_init=named(init, axes), name=name)


class MotionExtractor(nn.Module):
  """Motion tokens [B, L, D] -> `levels` features, each [B, L, width]: a (strided causal 3D conv,
  as a Dense on each token's volume) then an MLP gives level 0; each further level adds a
  residual block, h + W2 silu(N(W1 silu(N(h)))), to the one before, N normalising each token
  over all its channels. Tora's levels are conv ResNet blocks with BatchNorm; here they are per
  token, so that a packed row still gives each example what it gives alone (batch statistics
  would mix them)."""

  width: int
  levels: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, motion):
    h = _dense(self.width, ("patch", "embed"), self.dtype, "embed")(motion.astype(self.dtype))
    h = _dense(self.width, ("mlp", "embed"), self.dtype, "mlp")(nn.silu(h))
    features = [h]
    # One group: with a channel a group (GROUPS at width 32), the norm's output would be 0.
    for k in range(1, self.levels):
      r = _dense(self.width, ("embed", "mlp"), self.dtype, f"level_{k}_in")(nn.silu(group_norm(h, 1)))
      h = h + _dense(self.width, ("mlp", "embed"), self.dtype, f"level_{k}_out")(nn.silu(group_norm(r, 1)))
      features.append(h)
    return tuple(features)


def block_level(block, depth, levels):
  """Which of `levels` features block `block` of `depth` reads: equal runs, in order."""
  return block * levels // depth


class MotionFuser(nn.Module):
  """One block's adaptive norm: h + GN(h) * gamma + beta, gamma and beta from the motion feature
  (zero-initialised: the identity at init)."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, feature):
    width = h.shape[-1]
    mod = _dense(2 * width, ("embed", "modulation"), self.dtype, "gamma_beta", nn.initializers.zeros)(
        nn.silu(feature)
    )
    gamma, beta = jnp.split(mod, 2, axis=-1)
    return h + group_norm(h, fuser_groups(width)) * gamma + beta
