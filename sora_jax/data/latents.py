"""Encode videos to VAE latents once (grouped by shape, so each shape compiles once)."""
import functools
import json
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.data.transforms import to_model_range
from sora_jax.files import write_json


@functools.cache
def _encoder(vae):
  """One jitted encoder per VAE module, so repeated calls reuse its compilations."""
  return jax.jit(lambda p, v: vae.apply({"params": p}, v, method="encode"))


def encode_videos(vae, params, videos, batch_size=16):
  """uint8 videos of any (T, H, W) -> [(mean, std)] float32 latents, in input order."""
  encode = _encoder(vae)
  by_shape = defaultdict(list)
  for i, video in enumerate(videos):
    by_shape[video.shape].append(i)
  out = [None] * len(videos)
  for indices in by_shape.values():
    for start in range(0, len(indices), batch_size):
      chunk = indices[start:start + batch_size]
      batch = np.stack([to_model_range(videos[i]) for i in chunk])
      pad = batch_size - len(chunk)  # a fixed batch keeps one compilation per shape
      batch = np.concatenate([batch, np.repeat(batch[:1], pad, 0)]) if pad else batch
      mean, logvar = jax.device_get(encode(params, jnp.asarray(batch)))
      std = np.exp(0.5 * np.clip(logvar, -30.0, 20.0))
      for j, i in enumerate(chunk):
        out[i] = (mean[j], std[j])
  return out


def channel_stats(latents):
  """Per-channel (mean, std) of posterior samples (mean and spread of the posterior means plus
  the posterior's own variance): the DiT trains on latents standardised by these."""
  means = np.concatenate([m.reshape(-1, m.shape[-1]) for m, _ in latents])
  variances = np.concatenate([np.square(s).reshape(-1, s.shape[-1]) for _, s in latents])
  return means.mean(0), np.sqrt(means.var(0) + variances.mean(0)) + 1e-6


def write_stats(path, stats, **extra):
  """Per-channel (mean, std) as JSON (plus `extra` fields), written whole or not at all."""
  write_json(path, {"mean": stats[0].tolist(), "std": stats[1].tolist(), **extra})


def read_stats(path):
  with open(path) as f:
    stats = json.load(f)
  return np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)


def standardise(latent, stats):
  return (latent - stats[0]) / stats[1]


def destandardise(latent, stats):
  return latent * stats[1] + stats[0]
