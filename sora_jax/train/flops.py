"""Analytic model FLOPs of the DiT, for MFU: matmuls and attention that the model needs.

Counted per packed batch from the examples' patch grids, so padding and the masked-out
cross-example attention of the XLA reference are not credited. Training = 3 x forward.
"""

import numpy as np

# Dense bf16 peak FLOP/s per device, by jax device_kind (public datasheets), for MFU.
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H200": 989e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v5 lite": 197e12,
    "TPU v4": 275e12,
}


def attention_pairs(grid, pattern):
  """Query-key pairs of one example's self-attention layer under an attention pattern."""
  t, h, w = (int(g) for g in grid)
  n = t * h * w
  return {"full": n * n, "spatial": t * (h * w) ** 2, "temporal": h * w * t * t}[pattern]


def dit_forward_flop_terms(model_cfg, patch_dim, text_len, grids):
  """Forward FLOPs of the DiT for examples with patch grids `grids` ([N, 3]), split into
  (dense layers, attention): attention runs in kernels that XLA's cost analysis cannot see."""
  w, depth, r = model_cfg.width, model_cfg.depth, model_cfg.mlp_ratio
  grids = np.asarray(grids).reshape(-1, 3)
  grids = grids[grids.prod(-1) > 0]
  tokens = float(grids.prod(-1).sum())
  per_token = 2 * (4 * w * w + 2 * w * w + 2 * r * w * w) * depth  # self qkvo, cross q/o, MLP
  per_token += 2 * 2 * patch_dim * w  # patch embed, final layer
  per_example = 2 * (2 * text_len * w * w + 6 * w * w) * depth  # cross k/v, adaLN
  patterns = tuple(model_cfg.attention_patterns)
  pairs = sum(attention_pairs(g, patterns[i % len(patterns)]) for g in grids for i in range(depth))
  attention = 4 * w * pairs + 4 * w * tokens * text_len * depth  # QK^T and AV; self + cross
  return tokens * per_token + len(grids) * per_example, attention


def dit_forward_flops(model_cfg, patch_dim, text_len, grids):
  return sum(dit_forward_flop_terms(model_cfg, patch_dim, text_len, grids))


def dit_train_flops(model_cfg, patch_dim, text_len, grids):
  return 3.0 * dit_forward_flops(model_cfg, patch_dim, text_len, grids)
