"""Peak host memory of one sampling call, against sora_jax.memory's estimate.

  JAX_PLATFORMS=cpu PYTHONPATH=. python docs/scripts/attention_memory.py --size=2048 --frames=1 [--dense]

The pipeline is configs/shapes.py:tiny's with random weights (as the `pipe` fixture of
tests/test_generate.py): the model's size, not its weights, sets the memory. --dense gives the
xla attention path dense logits at every length (the path before the blockwise one), for a
before/after comparison. Run one size per process: the peak RSS is the process's.
Prints one markdown table row: size, frames, attention, tokens, RSS before the call, peak RSS,
the estimate, seconds.
"""

import argparse
import resource
import time

import jax
import numpy as np

from configs.shapes import get_config
from sora_jax import memory
from sora_jax.config import VAE_SPATIAL, VAE_TEMPORAL
from sora_jax.data.packing import first_fit, pack
from sora_jax.generate import Pipeline
from sora_jax.models.build import build_dit, build_vae, patch_dim
from sora_jax.models.patch import grid_positions
from sora_jax.nn import attention


def tiny_pipeline():
  """configs/shapes.py:tiny's models with random weights of the right shapes (eval_shape: no
  compiled init, which takes minutes on a busy 2-core machine)."""
  config = get_config("tiny")
  vae, dit = build_vae(config.vae), build_dit(config)
  c, t = config.vae.latent_channels, config.train
  example = {
      "tokens": np.zeros((1, patch_dim(config)), np.float32),
      "positions": grid_positions((1, 1, 1)),
      "grid": np.ones(3, np.int32),
      "text_ids": np.zeros(config.model.text.max_len, np.int32),
  }
  places = first_fit([1], rows=1, row_length=8, max_per_row=t.max_per_row)
  batch = pack([example], places, rows=1, row_length=8, max_per_row=t.max_per_row)
  inputs = (
      batch["tokens"],
      batch["segment_ids"],
      batch["positions"],
      batch["cond_mask"],
      np.full((1, t.max_per_row), 0.5, np.float32),
      batch["text_ids"],
  )
  rng = np.random.default_rng(0)
  random = lambda shapes: jax.tree.map(lambda s: 0.1 * rng.normal(size=s.shape).astype(np.float32), shapes)
  key = jax.random.key(0)
  vae_params = random(jax.eval_shape(vae.init, key, np.zeros((1, 1, 16, 16, 3), np.float32))["params"])
  dit_params = random(jax.eval_shape(dit.init, key, *inputs)["params"])
  return Pipeline(config, vae, vae_params, dit, dit_params, (np.zeros(c, np.float32), np.ones(c, np.float32)))


def estimate(config, frames, size, guidance):
  latent_shape = (
      1 + (frames - 1) // VAE_TEMPORAL,
      size // VAE_SPATIAL,
      size // VAE_SPATIAL,
      config.vae.latent_channels,
  )
  pt, ph, pw = config.model.patch
  tokens = latent_shape[0] // pt * latent_shape[1] // ph * latent_shape[2] // pw
  row_length = max(config.train.row_length, -(-tokens // 128) * 128)  # as Pipeline._pack
  m = config.model
  return tokens, memory.sampling_bytes(
      rows=1,
      row_length=row_length,
      width=m.width,
      num_heads=m.num_heads,
      mlp_ratio=m.mlp_ratio,
      patch_dim=patch_dim(config),
      caption_tokens=config.train.max_per_row * m.text.max_len,
      guidance=guidance != 1.0,
      videos=1,
      latent_shape=latent_shape,
      vae_base_channels=config.vae.base_channels,
      vae_channel_mult=tuple(config.vae.channel_mult),
      chunk_latents=config.sample.chunk_latents,
  )


def rss_bytes():
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", type=int, required=True)
  parser.add_argument("--frames", type=int, default=1)
  parser.add_argument("--steps", type=int, default=1)
  parser.add_argument("--dense", action="store_true")
  args = parser.parse_args()
  if args.dense:
    attention.DENSE_MAX_LOGITS = float("inf")
  pipe = tiny_pipeline()
  guidance = pipe.config.sample.guidance
  tokens, estimated = estimate(pipe.config, args.frames, args.size, guidance)
  before = rss_bytes()
  start = time.time()
  (video,) = pipe.generate(
      ["a red circle moves up"],
      num_frames=args.frames,
      height=args.size,
      width=args.size,
      steps=args.steps,
      guidance=guidance,
      seed=0,
  )
  seconds = time.time() - start
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  assert video.shape == (args.frames, args.size, args.size, 3)
  gb = lambda n: f"{n / 1e9:.2f}"
  print(
      f"| {args.size}x{args.size} | {args.frames} | {'dense' if args.dense else 'blockwise'} | {tokens} | "
      f"{gb(before)} | {gb(peak)} | {gb(estimated)} | {seconds:.0f} |"
  )


if __name__ == "__main__":
  main()
