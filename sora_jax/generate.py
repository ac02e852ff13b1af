"""The sampling pipeline used by the CLI and by evaluation.

prompts + (frames, height, width) -> noise tokens packed into rows -> guided sampler ->
unpatchify -> VAE decode in temporal chunks -> uint8 videos. Each prompt's noise comes from
fold_in(seed, prompt index), and the DiT output does not depend on what shares the row, so a
prompt's video is the same whichever prompts it is sampled with.
"""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sora_jax.config import VAE_SPATIAL, VAE_TEMPORAL, ConfigError, check_video_size, default_config
from sora_jax.data.latents import destandardise, encode_videos, read_stats, standardise
from sora_jax.data.packing import first_fit, pack, unpack
from sora_jax.data.transforms import to_uint8
from sora_jax.diffusion import make_objective, resolution_shift
from sora_jax.diffusion.sampling import guided, sample
from sora_jax.models.build import build_dit, build_vae, caption_ids
from sora_jax.models.patch import grid_positions, patch_grid, patchify, unpatchify
from sora_jax.models.vae import decode_chunked
from sora_jax.train.checkpoint import Checkpointer

CONFIG_FILE = "config.json"
LATENT_STATS_FILE = "latent_stats.json"  # the DiT's latent standardisation, beside the config


def _with_defaults(saved, defaults):
  """A saved config with keys added since it was written filled in from the defaults."""
  for key, value in defaults.items():
    if key not in saved:
      saved[key] = value
    elif isinstance(value, dict) and isinstance(saved[key], dict):
      _with_defaults(saved[key], value)
  return saved


class CheckpointMissing(ValueError):
  pass


@dataclasses.dataclass
class Pipeline:
  config: ml_collections.ConfigDict
  vae: object
  vae_params: object
  dit: object
  dit_params: object
  latent_stats: tuple
  _samplers: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  @classmethod
  def load(cls, workdir, dit=True):
    """Rebuild models from workdir/config.json and restore the latest EMA weights (the VAE only
    with dit=False, e.g. to encode latents after the VAE stage)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
      raise CheckpointMissing(f"{workdir}: no {CONFIG_FILE}; run `sora-jax train --workdir={workdir}` first")
    with open(path) as f:
      config = ml_collections.ConfigDict(_with_defaults(json.load(f), default_config().to_dict()))
    states = {}
    for name in ("vae", "dit") if dit else ("vae",):
      ckpt = Checkpointer(os.path.join(workdir, "checkpoints", name))
      saved = ckpt.restore_saved()
      ckpt.close()
      if saved is None:
        raise CheckpointMissing(f"{workdir}: no {name} checkpoint; run `sora-jax train --workdir={workdir}` first")
      states[name] = saved["ema_params"]
    if not dit:
      return cls(config, build_vae(config.vae), states["vae"], None, None, None)
    return cls(config, build_vae(config.vae), states["vae"], build_dit(config), states["dit"],
               read_stats(os.path.join(workdir, LATENT_STATS_FILE)))

  def generate(self, prompts, *, num_frames, height, width, steps, guidance, seed, first_frames=None):
    """list[str] -> list of uint8 [num_frames, height, width, 3].

    first_frames: optional uint8 [height, width, 3] images, one per prompt: image-to-video, the
    video opens on the given frame instead of a sampled one.
    """
    c = self.config
    check_video_size(num_frames, height, width, tuple(c.model.patch), what="requested size")
    if not prompts or any(not p.strip() for p in prompts):
      raise ConfigError("prompt is empty: give a caption such as --prompt='a red circle moves to the right'")
    latent_shape = (1 + (num_frames - 1) // VAE_TEMPORAL, height // VAE_SPATIAL, width // VAE_SPATIAL,
                    c.vae.latent_channels)
    key = jax.random.key(seed)
    ids = caption_ids(c, prompts)
    first = None
    if first_frames is not None:
      first = self._encode_first_frames(first_frames, len(prompts), (height, width))
    elif c.sample.first_frame != "joint" and latent_shape[0] > 1:
      # Two stages: frame 0 first, then image-to-video from it, its latent held clean as in i2v
      # training. "image": a text-to-image sample (Emu Video; an image is a 1-frame video).
      # "video": frame 0 of a one-pass sample, whose shape sits where its whole track fits.
      first_shape = (1,) + latent_shape[1:] if c.sample.first_frame == "image" else latent_shape
      first = [z[:1] for z in self._sample_latents(ids, first_shape, steps, guidance, jax.random.fold_in(key, 2**31 - 1))]
    return [self.decode(z) for z in self._sample_latents(ids, latent_shape, steps, guidance, key, first)]

  def _encode_first_frames(self, images, count, size):
    """uint8 images [H, W, 3] -> standardised 1-frame latents (the causal VAE encodes frame 0 alone)."""
    if len(images) != count:
      raise ConfigError(f"{len(images)} first frames for {count} prompts: give one per prompt")
    for image in images:
      if np.shape(image) != (*size, 3):
        raise ConfigError(f"first frame is {np.shape(image)}; image-to-video at this size needs {(*size, 3)}")
    latents = encode_videos(self.vae, self.vae_params, [np.asarray(image, np.uint8)[None] for image in images])
    return [standardise(mean, self.latent_stats) for mean, _ in latents]

  def decode(self, latent):
    """Standardised latent [T, H, W, C] -> uint8 video, decoded in temporal chunks."""
    z = destandardise(latent, self.latent_stats)
    video = decode_chunked(self.vae, self.vae_params, jnp.asarray(z[None]),
                           chunk_latents=self.config.sample.chunk_latents)
    return to_uint8(np.asarray(video[0]))

  def _sample_latents(self, ids, latent_shape, steps, guidance, key, first=None):
    """Standardised latents [T, H, W, C], one per caption; `first` (latents) fixes frame 0."""
    c = self.config
    patch = tuple(c.model.patch)
    grid = patch_grid(latent_shape[:3], patch)
    examples = []
    for i in range(len(ids)):
      z = np.array(jax.random.normal(jax.random.fold_in(key, i), latent_shape))
      example = {"tokens": None, "positions": grid_positions(grid), "grid": np.array(grid, np.int32),
                 "text_ids": ids[i]}
      if first is not None:
        z[0] = first[i][0]
        example["cond_mask"] = example["positions"][:, 0] == 0
      example["tokens"] = patchify(z, patch)
      examples.append(example)
    batch, places = self._pack(examples)
    tokens = self._sample(batch, steps, float(guidance))
    return [unpatchify(t, grid, patch, c.vae.latent_channels) for t in unpack(np.asarray(tokens), examples, places)]

  def _pack(self, examples):
    """Rows of the training length (longer if one example needs it); as many rows as needed."""
    t = self.config.train
    n = len(examples[0]["tokens"])
    row_length = max(t.row_length, -(-n // 128) * 128)
    rows = 1
    while True:
      places = first_fit([len(e["tokens"]) for e in examples], rows=rows, row_length=row_length,
                         max_per_row=t.max_per_row)
      if all(p is not None for p in places):
        return pack(examples, places, rows=rows, row_length=row_length, max_per_row=t.max_per_row), places
      rows += 1

  def _sample(self, batch, steps, guidance):
    b = {k: jnp.asarray(v) for k, v in batch.items()}
    null_ids = jnp.broadcast_to(jnp.asarray(caption_ids(self.config, [""])[0]), b["text_ids"].shape)
    return self._sampler(steps, guidance)(self.dit_params, b, null_ids)

  def _sampler(self, steps, guidance):
    """The jitted sampler for (steps, guidance), built once and shared by copies of this pipeline
    with other weights (progress samples): each new jit would compile again. Keyed also by what
    it closes over (the DiT module, the diffusion settings), which copies may change."""
    key = (steps, guidance, self.dit, self.config.diffusion.to_json())
    if key not in self._samplers:
      c = self.config
      objective = make_objective(c.diffusion)

      def run(params, b, null_ids):
        apply = lambda *a: self.dit.apply({"params": params}, *a)
        denoise = guided(apply, guidance, b["segment_ids"], b["positions"], b["cond_mask"])
        shift = resolution_shift(jnp.prod(b["grid"], -1), c.diffusion.shift_base_tokens)
        times = objective.sampling_times(steps, shift)
        return sample(objective, denoise, b["tokens"], times, b["segment_ids"],
                      b["cond_mask"], b["tokens"], b["text_ids"], null_ids)

      self._samplers[key] = jax.jit(run)
    return self._samplers[key]
