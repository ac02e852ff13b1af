"""The model family of scaling studies: one knob, the depth d, sets the DiT's size.

Width 64 d with d heads (a fixed head size of 64, the muP-for-DiT rule: width grows by heads),
depth d. SIZES run from d = 1 (0.9 million parameters, a CPU model) to d = 32 (about
three billion, a pod model). `family_report` gives each size's exact parameter count, its
training FLOPs per token for the config's data mix (attention within each example and the
packing's padding included, 6 N beside it) and, for a named TPU slice, the compile-ahead fit.
"""

import itertools

import jax
import numpy as np

from sora_jax.config import VAE_SPATIAL, VAE_TEMPORAL, ConfigError, validate
from sora_jax.data.stream import PackedBatches
from sora_jax.models.build import patch_dim
from sora_jax.scaling.mup import _abstract_params
from sora_jax.train.flops import dit_forward_flop_terms

HEAD_DIM = 64
SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
MIX_EXAMPLES = 4096  # examples drawn from the data mix to measure its padding


def member(config, depth):
  """The config with the DiT at family size d = depth (width 64 d, d heads, depth d)."""
  if depth < 1:
    raise ConfigError(f"family size d={depth} must be positive")
  c = config.copy_and_resolve_references()
  c.model.depth, c.model.width, c.model.num_heads = depth, HEAD_DIM * depth, depth
  if c.model.scan_layers and depth % len(c.model.attention_patterns):
    c.model.scan_layers = False  # a depth the pattern group does not divide: plain blocks
  validate(c)
  return c


def parameter_count(config):
  """(all DiT parameters, those outside the caption encoder's embedding table): exact, from
  the parameter shapes (nothing is initialised)."""
  shapes = jax.tree_util.tree_flatten_with_path(_abstract_params(config, config.model.width))[0]
  total = sum(int(np.prod(x.shape)) for _, x in shapes)
  embedding = sum(int(np.prod(x.shape)) for path, x in shapes if "embedding" in jax.tree_util.keystr(path))
  return total, total - embedding


def data_mix_grids(config, count=MIX_EXAMPLES, seed=0):
  """Patch grids of `count` examples drawn as training draws them: (frames, size) uniform over
  data.frames x data.sizes."""
  pt, ph, pw = config.model.patch
  buckets = list(itertools.product(config.data.frames, config.data.sizes))
  rng = np.random.default_rng(seed)
  picks = rng.integers(len(buckets), size=count)
  return np.array(
      [
          ((1 + (f - 1) // VAE_TEMPORAL) // pt, h // VAE_SPATIAL // ph, w // VAE_SPATIAL // pw)
          for f, (h, w) in (buckets[i] for i in picks)
      ],
      np.int64,
  )


def mix_padding(config, grids):
  """Share of row tokens left as padding when the grids stream through training's packer
  (`PackedBatches`: first fit, late examples wait for the next batch)."""
  t = config.train

  def example_at(position, step):
    del step
    n = int(grids[position % len(grids)].prod())
    return {
        "tokens": np.zeros((n, 1), np.float32),
        "positions": np.zeros((n, 3), np.int32),
        "grid": grids[position % len(grids)],
        "text_ids": np.zeros(1, np.int32),
    }

  stream = PackedBatches(example_at, rows=t.rows, row_length=t.row_length, max_per_row=t.max_per_row)
  batches = max(1, len(grids) // (t.rows * t.max_per_row))
  return float(np.mean([next(stream)[1]["padding_fraction"] for _ in range(batches)]))


def size_row(config, grids, padding):
  """One family size: parameters, train FLOPs per real token (model FLOPs; and what the packed
  rows compute, padding tokens going through every dense layer), 6 N per token."""
  total, non_embedding = parameter_count(config)
  dense, attention = dit_forward_flop_terms(config.model, patch_dim(config), config.model.text.max_len, grids)
  tokens = float(grids.prod(-1).sum())
  per_token = 3 * (dense + attention) / tokens
  return {
      "depth": config.model.depth,
      "width": config.model.width,
      "heads": config.model.num_heads,
      "parameters": total,
      "non_embedding_parameters": non_embedding,
      "train_flops_per_token": per_token,
      "train_flops_per_token_with_padding": per_token + 3 * dense / tokens * padding / (1 - padding),
      "six_n": 6.0 * non_embedding,
      "attention_share": attention / (dense + attention),
  }


def family_report(config, sizes=SIZES, topology=None):
  """{"padding": ..., "sizes": [size_row (+ "aot": compile-ahead fit on `topology`)]}."""
  grids = data_mix_grids(config)
  padding = mix_padding(config, grids)
  rows = []
  for d in sizes:
    c = member(config, d)
    row = size_row(c, grids, padding)
    if topology:
      from sora_jax import aot  # libtpu: only with --topology

      report = aot.compile_report(c, topology)
      train = report["reports"][0]
      row["aot"] = {
          k: train.get(k) for k in ("fits", "memory_per_chip_gib", "hbm_per_chip_gib", "roofline_mfu")
      }
    rows.append(row)
  return {"padding_fraction": padding, "mix_examples": len(grids), "sizes": rows}


def table(report):
  lines = [
      f"train FLOPs per token over the config's data mix (padding {report['padding_fraction']:.3f} of row tokens)",
      f"{'d':>3} {'width':>6} {'heads':>5} {'params':>14} {'FLOPs/token':>12} {'+padding':>12} {'6N':>12} {'attn':>5}  fit",
  ]
  for r in report["sizes"]:
    fit = r.get("aot")
    fit_text = (
        ""
        if fit is None
        else f"{'fits' if fit['fits'] else 'DOES NOT FIT'} {fit['memory_per_chip_gib']} / {fit['hbm_per_chip_gib']} GiB"
    )
    lines.append(
        f"{r['depth']:>3} {r['width']:>6} {r['heads']:>5} {r['parameters']:>14,} {r['train_flops_per_token']:>12.4g} "
        f"{r['train_flops_per_token_with_padding']:>12.4g} {r['six_n']:>12.4g} {r['attention_share']:>5.2f}  {fit_text}"
    )
  return "\n".join(lines)
