"""Stage 2: encode the synthetic videos once, then train the packed DiT on their latents."""
import dataclasses
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sora_jax.config import VAE_TEMPORAL
from sora_jax.data.latents import channel_stats, encode_videos, standardise
from sora_jax.data.packing import first_fit, pack, padding_fraction
from sora_jax.data.synthetic import ShapesSource, caption
from sora_jax.diffusion import make_objective
from sora_jax.diffusion.loss import diffusion_loss
from sora_jax.models.build import build_dit, caption_ids
from sora_jax.models.patch import grid_positions, patch_grid, patchify
from sora_jax.train.loop import fit, host_rng
from sora_jax.train.state import apply_gradients, create_state, make_optimizer

CACHE_FILE = "latent_cache.pkl"


def latent_cache(config, workdir, vae, vae_params):
  """{'latents': [(mean, std)], 'specs': [...], 'stats': (mean, std)}, built once per workdir."""
  path = os.path.join(workdir, CACHE_FILE)
  if os.path.exists(path):
    with open(path, "rb") as f:
      return pickle.load(f)
  # Every video is rendered and encoded at the longest duration, and shorter examples keep a
  # latent prefix: the VAE is causal, so the prefix is exactly the encoding of the first
  # 1 + 4k frames, and only one shape per resolution needs compiling.
  frames = tuple(config.data.frames)
  source = ShapesSource(config.seed, frames=(max(frames),), sizes=tuple(map(tuple, config.data.sizes)))
  examples = [source[i] for i in range(config.data.num_examples)]
  full = encode_videos(vae, vae_params, [e["video"] for e in examples])
  lengths = host_rng(config.seed, 3, 0).choice(frames, size=len(examples))
  specs, latents = [], []
  for e, (mean, std), f in zip(examples, full, lengths):
    keep = 1 + (int(f) - 1) // VAE_TEMPORAL
    specs.append(dataclasses.replace(e["spec"], num_frames=int(f)))
    latents.append((mean[:keep], std[:keep]))
  cache = {"latents": latents, "specs": specs, "stats": channel_stats(latents)}
  with open(path + ".tmp", "wb") as f:  # rename: a killed run never leaves a half cache
    pickle.dump(cache, f)
  os.replace(path + ".tmp", path)
  return cache


def latent_example(config, latent, stats, caption_text):
  """Standardised latent [T, H, W, C] + caption -> a packable example."""
  patch = tuple(config.model.patch)
  z = standardise(latent, stats)
  grid = patch_grid(z.shape[:3], patch)
  return {"tokens": patchify(z, patch).astype(np.float32), "positions": grid_positions(grid),
          "grid": np.array(grid, np.int32), "text_ids": caption_ids(config, [caption_text])[0]}


def dit_batch(config, cache, step):
  """Random examples packed first-fit into [rows, row_length]; those that do not fit wait."""
  t = config.train
  rng = host_rng(config.seed, 2, step)
  candidates = rng.integers(0, len(cache["specs"]), t.rows * t.max_per_row)
  examples = []
  for i in candidates:
    mean, std = cache["latents"][i]
    z = mean + std * rng.standard_normal(mean.shape).astype(np.float32)  # posterior sample
    text = "" if rng.random() < config.data.caption_dropout else caption(cache["specs"][i], rng)
    examples.append(latent_example(config, z, cache["stats"], text))
  places = first_fit([len(e["tokens"]) for e in examples], rows=t.rows, row_length=t.row_length,
                     max_per_row=t.max_per_row)
  batch = pack(examples, places, rows=t.rows, row_length=t.row_length, max_per_row=t.max_per_row)
  placed = sum(p is not None for p in places)
  return batch, {"padding_fraction": padding_fraction(batch), "examples_per_row": placed / t.rows}


def train_dit(config, workdir, vae, vae_params):
  """Returns (dit module, EMA params, latent stats) after training or resuming the DiT stage."""
  cache = latent_cache(config, workdir, vae, vae_params)
  model = build_dit(config)
  objective = make_objective(config.diffusion)
  example, _ = dit_batch(config, cache, 0)
  inputs = {k: jnp.asarray(v) for k, v in example.items()}
  t0 = jnp.zeros(inputs["grid"].shape[:2])
  params = jax.jit(model.init)(jax.random.key(config.seed), inputs["tokens"], inputs["segment_ids"],
                               inputs["positions"], inputs["cond_mask"], t0, inputs["text_ids"])["params"]
  tc = config.train
  tx, schedule = make_optimizer(lr=tc.lr, warmup=tc.warmup, total_steps=tc.steps,
                                weight_decay=tc.weight_decay, grad_clip=tc.grad_clip)

  @jax.jit
  def train_step(state, batch, rng):
    def loss_fn(params):
      apply = lambda *a: model.apply({"params": params}, *a)
      return diffusion_loss(apply, objective, batch, rng, shift_base_tokens=config.diffusion.shift_base_tokens)
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    new_state = apply_gradients(state, grads, tx, tc.ema_decay)
    return new_state, {"loss": loss, "lr": schedule(state.step), "grad_norm": optax.global_norm(grads)}

  state = fit("dit", workdir=workdir, state=create_state(params, tx), train_step=train_step,
              batch_at=lambda step: dit_batch(config, cache, step), num_steps=tc.steps,
              seed=config.seed + 1, log_every=tc.log_every, checkpoint_every=tc.checkpoint_every)
  return model, state.ema_params, cache["stats"]
