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


def init_params(model, batch, seed=0, perturb=False):
  """Model params; `perturb` moves them off the adaLN-Zero init, whose output is exactly zero
  (so output comparisons would pass trivially)."""
  t = np.full(batch["grid"].shape[:2], 0.5, np.float32)
  params = model.init(jax.random.key(seed), *model_inputs(batch, t))["params"]
  if perturb:
    params = jax.tree.map(lambda p: p + 0.05 * np.random.default_rng(1).normal(size=p.shape), params)
  return params


def fake_latent_cache(config, num_videos=12, seed=0):
  """A latent cache (as train/dit_stage.latent_cache builds) of random latents and real specs."""
  from sora_jax.config import VAE_SPATIAL, VAE_TEMPORAL
  from sora_jax.data.latents import channel_stats
  from sora_jax.data.synthetic import sample_spec
  rng = np.random.default_rng(seed)
  specs, latents = [], []
  for _ in range(num_videos):
    spec = sample_spec(rng, frames=tuple(config.data.frames), sizes=tuple(map(tuple, config.data.sizes)))
    shape = (1 + (spec.num_frames - 1) // VAE_TEMPORAL, spec.height // VAE_SPATIAL, spec.width // VAE_SPATIAL,
             config.vae.latent_channels)
    specs.append(spec)
    latents.append((rng.normal(size=shape).astype(np.float32), np.full(shape, 0.1, np.float32)))
  return {"latents": latents, "specs": specs, "stats": channel_stats(latents)}


def tiny_pipeline():
  """A sampling pipeline of the tiny shapes config with random weights (perturbed off the
  adaLN-Zero init, so prompts, seeds and conditions change the output)."""
  from configs.shapes import get_config
  from sora_jax.generate import Pipeline
  from sora_jax.models.build import build_dit, build_vae
  config = get_config("tiny")
  vae, dit = build_vae(config.vae), build_dit(config)
  vae_params = vae.init(jax.random.key(0), np.zeros((1, 1, 16, 16, 3), np.float32))["params"]
  rng = np.random.default_rng(0)
  c = config.vae.latent_channels
  ex = random_example(rng, (1, 1, 1))
  ex["tokens"] = np.zeros((1, 4 * c), np.float32)
  ex["text_ids"] = np.zeros(config.model.text.max_len, np.int32)
  batch, _ = packed([ex], row_length=8, max_per_row=config.train.max_per_row)
  dit_params = init_params(dit, batch)
  dit_params = jax.tree.map(lambda p: p + 0.1 * rng.normal(size=p.shape).astype(np.float32), dit_params)
  return Pipeline(config, vae, vae_params, dit, dit_params, (np.zeros(c, np.float32), np.ones(c, np.float32)))


def describe_frames(frames, caption):
  """A captioner entry point (`prepare --captioner=helpers:describe_frames`) for the tests."""
  return f"frames: {len(frames)} of {frames.shape[1]}x{frames.shape[2]}, mean {frames.mean():.0f}"


def fail_on_dark_clips(frames, caption):
  """A captioner that fails on dark clips (every shapes clip): prepare must go on without it."""
  if frames.mean() < 200:
    raise ValueError("too dark to describe")
  return caption
