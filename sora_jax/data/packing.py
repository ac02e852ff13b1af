"""Pack variable-size examples into fixed [B, L] rows (NaViT-style), and unpack them.

An example is a dict with `tokens` [n, D], `positions` [n, 3], `grid` (Tp, Hp, Wp),
`text_ids` [Lt] and optionally `cond_mask` [n] (tokens given clean), `text_embeds` [Lt, D]
(a frozen encoder's cached output) and `motion` [n, Dm] (a Tora trajectory's motion tokens;
zeros in the batch for examples without one). The packed batch follows
the contract of ARCHITECTURE.md; `placements` says where each example went.
"""

import numpy as np


class RowSpace:
  """First-fit bookkeeping of one batch: tokens and examples used per row."""

  def __init__(self, rows, row_length, max_per_row):
    self.row_length, self.max_per_row = row_length, max_per_row
    self.used, self.count = [0] * rows, [0] * rows

  def place(self, n):
    """(row, slot, offset) in the first row with room for n tokens, or None."""
    for r, (used, count) in enumerate(zip(self.used, self.count)):
      if used + n <= self.row_length and count < self.max_per_row:
        self.used[r] += n
        self.count[r] += 1
        return r, count, used
    return None

  def full(self):
    return all(c == self.max_per_row or u == self.row_length for u, c in zip(self.used, self.count))


def first_fit(lengths, *, rows, row_length, max_per_row):
  """Place each length in the first row with room. Returns [(row, slot, offset) or None]."""
  space = RowSpace(rows, row_length, max_per_row)
  return [space.place(n) for n in lengths]


def empty_batch(
    rows, row_length, max_per_row, patch_dim, text_len, text_dim=None, text_dtype=None, motion_dim=None
):
  """Zeros of the packed batch; with text_dim, also text_embeds [rows, E, Lt, text_dim]; with
  motion_dim, also motion [rows, L, motion_dim]."""
  batch = {
      "tokens": np.zeros((rows, row_length, patch_dim), np.float32),
      "segment_ids": np.zeros((rows, row_length), np.int32),
      "positions": np.zeros((rows, row_length, 3), np.int32),
      "loss_mask": np.zeros((rows, row_length), np.float32),
      "cond_mask": np.zeros((rows, row_length), bool),
      "text_ids": np.zeros((rows, max_per_row, text_len), np.int32),
      "grid": np.zeros((rows, max_per_row, 3), np.int32),
  }
  if text_dim:
    batch["text_embeds"] = np.zeros((rows, max_per_row, text_len, text_dim), text_dtype or np.float32)
  if motion_dim:
    batch["motion"] = np.zeros((rows, row_length, motion_dim), np.float32)
  return batch


def pack(examples, placements, *, rows, row_length, max_per_row):
  """Write examples at their placements (from `first_fit`; None entries are skipped)."""
  first = examples[0]
  embeds = first.get("text_embeds")
  motion = next((ex["motion"] for ex in examples if "motion" in ex), None)
  batch = empty_batch(
      rows,
      row_length,
      max_per_row,
      first["tokens"].shape[-1],
      first["text_ids"].shape[-1],
      None if embeds is None else embeds.shape[-1],
      None if embeds is None else embeds.dtype,
      None if motion is None else motion.shape[-1],
  )
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
    if embeds is not None:
      batch["text_embeds"][r, slot] = ex["text_embeds"]
    if "motion" in ex:
      batch["motion"][r, span] = ex["motion"]
    batch["grid"][r, slot] = ex["grid"]
  return batch


def pack_values(values, placements, shape, fill, per_token=True):
  """Per-example arrays (per token [n, ...], or per example [...] with per_token=False) into a
  [rows, row_length or max_per_row, ...] array of `shape` filled with `fill` elsewhere: values
  that ride along with a batch from `pack` (e.g. the sampler's noise)."""
  out = np.full(shape, fill, np.asarray(values[0]).dtype)
  for value, place in zip(values, placements):
    if place is not None:
      r, slot, offset = place
      if per_token:
        out[r, offset : offset + len(value)] = value
      else:
        out[r, slot] = value
  return out


def unpack(values, examples, placements):
  """values [B, L, ...] -> the per-example slices, in example order (None if not placed)."""
  out = []
  for ex, place in zip(examples, placements):
    if place is None:
      out.append(None)
      continue
    r, _, offset = place
    out.append(values[r, offset : offset + len(ex["tokens"])])
  return out


def padding_fraction(batch):
  return float(1.0 - (batch["segment_ids"] > 0).mean())
