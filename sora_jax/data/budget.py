"""NaViT-style token budgets: pick the size and length of each training example.

A clip of (frames, height, width) costs `tokens` patches after the VAE (8x spatial, 4x temporal)
and the DiT patch. Given a budget, keep the aspect ratio and scale the frame down (never up) until
the clip fits, then trim frames; sizes stay divisible by VAE stride x patch and frames stay 1 + 4k.
"""
import math

import numpy as np

from sora_jax.config import VAE_SPATIAL, VAE_TEMPORAL


def tokens(frames, height, width, patch):
  pt, ph, pw = patch
  latent_frames = 1 + (frames - 1) // VAE_TEMPORAL
  return (-(-latent_frames // pt)) * (height // (VAE_SPATIAL * ph)) * (width // (VAE_SPATIAL * pw))


def fit_to_budget(frames, height, width, budget, patch, min_side=None):
  """(frames, height, width) -> the largest same-aspect size and 1 + 4k length within `budget`.

  The spatial scale is chosen first for the whole clip; if even the smallest frame (one stride
  on the short side) times all frames is over budget, frames are trimmed.
  """
  sh, sw = VAE_SPATIAL * patch[1], VAE_SPATIAL * patch[2]
  min_side = min_side or min(sh, sw)
  frames = 1 + (frames - 1) // VAE_TEMPORAL * VAE_TEMPORAL
  scale = min(1.0, math.sqrt(budget / max(tokens(frames, height, width, patch), 1)))
  while True:
    h = max(sh, int(height * scale) // sh * sh)
    w = max(sw, int(width * scale) // sw * sw)
    if tokens(frames, h, w, patch) <= budget or min(h, w) <= min_side:
      break
    scale *= 0.95
  while frames > 1 and tokens(frames, h, w, patch) > budget:
    frames -= VAE_TEMPORAL
  if tokens(frames, h, w, patch) > budget:
    raise ValueError(f"a {h}x{w} frame is {tokens(1, h, w, patch)} tokens, over the budget of {budget}")
  return frames, h, w


def sample_budget(rng, budgets, weights=None):
  """Draw a token budget from a configured distribution (list of budgets, optional weights)."""
  p = None if weights is None else np.asarray(weights, float) / np.sum(weights)
  return int(rng.choice(np.asarray(budgets), p=p))


def drop_rate(step, start, end, steps):
  """Token-dropping rate schedule: linear from `start` to `end` over `steps` (then `end`)."""
  return end if steps <= 0 else start + (end - start) * min(step / steps, 1.0)


def drop_tokens(example, rate, rng):
  """Keep a random (1 - rate) of an example's tokens, in order; positions travel with them, so
  the DiT sees a sparse but correctly placed clip. Conditioning tokens are always kept."""
  n = len(example["tokens"])
  cond = example.get("cond_mask", np.zeros(n, bool))
  free = np.flatnonzero(~cond)
  keep_free = max(1, int(round(len(free) * (1.0 - rate))))
  keep = np.sort(np.concatenate([np.flatnonzero(cond), rng.choice(free, keep_free, replace=False)]))
  out = dict(example)
  for key in ("tokens", "positions", "cond_mask", "motion"):
    if key in example:
      out[key] = example[key][keep]
  return out
