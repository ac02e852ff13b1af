"""Tiny models and packed batches shared by the tests."""
import jax
import numpy as np

from sora_jax.data.packing import first_fit, pack
from sora_jax.models.dit import DiT
from sora_jax.models.patch import grid_positions
from sora_jax.models.text import HashedWordEncoder, tokenize

TEXT_LEN, VOCAB, PATCH_DIM = 8, 64, 12


def tiny_dit(**kw):
  kw.setdefault("attention_patterns", ("full", "spatial", "temporal"))
  return DiT(PATCH_DIM, HashedWordEncoder(VOCAB, 16, 1, 2), width=32, depth=3, num_heads=2, **kw)


def random_example(rng, grid, caption="a red circle moves up"):
  n = int(np.prod(grid))
  return {"tokens": rng.normal(size=(n, PATCH_DIM)).astype(np.float32),
          "positions": grid_positions(grid), "grid": np.array(grid, np.int32),
          "text_ids": tokenize([caption], TEXT_LEN, VOCAB)[0]}


def packed(examples, rows=1, row_length=64, max_per_row=4):
  places = first_fit([len(e["tokens"]) for e in examples], rows=rows, row_length=row_length,
                     max_per_row=max_per_row)
  return pack(examples, places, rows=rows, row_length=row_length, max_per_row=max_per_row), places


def model_inputs(batch, timesteps):
  return (batch["tokens"], batch["segment_ids"], batch["positions"], batch["cond_mask"],
          timesteps, batch["text_ids"])


def init_params(model, batch, seed=0):
  t = np.full(batch["grid"].shape[:2], 0.5, np.float32)
  return model.init(jax.random.key(seed), *model_inputs(batch, t))["params"]
