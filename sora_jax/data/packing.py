"""Pack variable-size examples into fixed [B, L] rows (NaViT-style), and unpack them.

An example is a dict with `tokens` [n, D], `positions` [n, 3], `grid` (Tp, Hp, Wp),
`text_ids` [Lt] and optionally `cond_mask` [n] (tokens given clean). The packed batch follows
the contract of ARCHITECTURE.md; `placements` says where each example went.
"""
import numpy as np


def first_fit(lengths, *, rows, row_length, max_per_row):
  """Place each length in the first row with room. Returns [(row, slot, offset) or None]."""
  used = [0] * rows
  count = [0] * rows
  placements = []
  for n in lengths:
    for r in range(rows):
      if used[r] + n <= row_length and count[r] < max_per_row:
        placements.append((r, count[r], used[r]))
        used[r] += n
        count[r] += 1
        break
    else:
      placements.append(None)
  return placements


def empty_batch(rows, row_length, max_per_row, patch_dim, text_len):
  return {
      "tokens": np.zeros((rows, row_length, patch_dim), np.float32),
      "segment_ids": np.zeros((rows, row_length), np.int32),
      "positions": np.zeros((rows, row_length, 3), np.int32),
      "loss_mask": np.zeros((rows, row_length), np.float32),
      "cond_mask": np.zeros((rows, row_length), bool),
      "text_ids": np.zeros((rows, max_per_row, text_len), np.int32),
      "grid": np.zeros((rows, max_per_row, 3), np.int32),
  }


def pack(examples, placements, *, rows, row_length, max_per_row):
  """Write examples at their placements (from `first_fit`; None entries are skipped)."""
  first = examples[0]
  batch = empty_batch(rows, row_length, max_per_row, first["tokens"].shape[-1], first["text_ids"].shape[-1])
  for ex, place in zip(examples, placements):
    if place is None:
      continue
    r, slot, offset = place
    span = slice(offset, offset + len(ex["tokens"]))
    cond = ex.get("cond_mask", np.zeros(len(ex["tokens"]), bool))
    batch["tokens"][r, span] = ex["tokens"]
    batch["segment_ids"][r, span] = slot + 1
    batch["positions"][r, span] = ex["positions"]
    batch["cond_mask"][r, span] = cond
    batch["loss_mask"][r, span] = ~cond
    batch["text_ids"][r, slot] = ex["text_ids"]
    batch["grid"][r, slot] = ex["grid"]
  return batch


def unpack(values, examples, placements):
  """values [B, L, ...] -> the per-example slices, in example order (None if not placed)."""
  out = []
  for ex, place in zip(examples, placements):
    if place is None:
      out.append(None)
      continue
    r, _, offset = place
    out.append(values[r, offset:offset + len(ex["tokens"])])
  return out


def padding_fraction(batch):
  return float(1.0 - (batch["segment_ids"] > 0).mean())
