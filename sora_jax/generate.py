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
from sora_jax.data.conditions import Condition, apply_conditions, check_edit_strength, encode_given
from sora_jax.data.packing import first_fit, pack, pack_values, unpack
from sora_jax.data.transforms import to_uint8
from sora_jax.diffusion import make_objective, resolution_shift
from sora_jax.diffusion.sampling import guided, sample
from sora_jax import memory
from sora_jax.models.build import (
    build_dit,
    build_vae,
    caption_ids,
    null_text,
    patch_dim,
    condition_inputs,
    with_text_embeds,
)
from sora_jax.models.patch import grid_positions, patch_grid, patchify, unpatchify
from sora_jax.models.vae import decode_chunked
from sora_jax.train.checkpoint import Checkpointer

CONFIG_FILE = "config.json"
LATENT_STATS_FILE = "latent_stats.json"  # the DiT's latent standardisation, beside the config


def run_config(workdir):
  """workdir/config.json, keys added since it was written taking their defaults."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointMissing(f"{workdir}: no {CONFIG_FILE}; run `sora-jax train --workdir={workdir}` first")
  with open(path) as f:
    return ml_collections.ConfigDict(_with_defaults(json.load(f), default_config().to_dict()))


def _with_defaults(saved, defaults):
  """A saved config with keys added since it was written filled in from the defaults."""
  for key, value in defaults.items():
    if key not in saved:
      saved[key] = value
    elif isinstance(value, dict) and isinstance(saved[key], dict):
      _with_defaults(saved[key], value)
  return saved


# config.sample's keys that are Pipeline.generate's (and evaluation's) size and sampler arguments.
SAMPLE_SETTINGS = ("num_frames", "height", "width", "steps", "guidance")


def sample_settings(config):
  """{num_frames, height, width, steps, guidance} of config.sample: a run's default sampling."""
  return {key: config.sample[key] for key in SAMPLE_SETTINGS}


class CheckpointMissing(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class Given:
  """Pixels given to a request: uint8 frames [F, H, W, 3] at output frame `at` (< 0: from the
  end), held clean (strength 1) or only guiding the first `strength` of the sampling."""

  frames: np.ndarray
  at: int = 0
  strength: float = 1.0


@dataclasses.dataclass(frozen=True)
class Request:
  """One video to sample: a caption, its size, what is given, and its own noise seed (an int or
  a tuple of ints; None: the call's seed folded with the request's index). prompt None samples
  without a caption (guidance's null caption: what is given leads, e.g. a loop's way back)."""

  prompt: str | None
  num_frames: int
  height: int
  width: int
  given: tuple = ()
  edit: np.ndarray = None  # SDEdit: uint8 [num_frames, H, W, 3], noised to t = strength
  strength: float = 1.0
  seed: object = None
  trajectories: tuple = ()  # Tora: tracks, each [num_frames, 2] (y, x) pixels (data/trajectory.py)


def _noise_key(seed, index, own_seed):
  """(key, index) whose fold_in draws a request's noise: the call's seed and the request's index,
  or the request's own seed (an int, or a tuple of ints folded in turn, e.g. (seed, chunk))."""
  if own_seed is None:
    return jax.random.key(seed), index
  first, *rest = (own_seed,) if isinstance(own_seed, int) else tuple(own_seed)
  key = jax.random.key(first)
  for part in rest:
    key = jax.random.fold_in(key, part)
  return key, 0


def request_noise(key, index, latent_shape):
  """A request's initial latent: a function of its noise key and shape only, never of the model,
  so a compute-matched grid starts every model from the same latent (scaling/grid.py)."""
  return np.asarray(jax.random.normal(jax.random.fold_in(key, index), latent_shape))


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
  def load(cls, workdir, dit=True, dit_step=None, weights="ema"):
    """Rebuild models from workdir/config.json and restore the latest EMA weights (the VAE only
    with dit=False, e.g. to encode latents after the VAE stage; the DiT of a kept step with
    dit_step, e.g. for a grid along the run; the raw weights with weights="params"). A folder
    written by `sora-jax export` loads from its safetensors instead."""
    from sora_jax.export import MODEL_INDEX, load_exported  # here: export imports this module

    if os.path.isfile(os.path.join(workdir, MODEL_INDEX)):
      return load_exported(cls, workdir, dit=dit)
    config = run_config(workdir)
    states = {}
    for name in ("vae", "dit") if dit else ("vae",):
      ckpt = Checkpointer(os.path.join(workdir, "checkpoints", name))
      step = dit_step if name == "dit" else None
      if step is not None and step not in (kept := ckpt.all_steps()):
        ckpt.close()
        raise CheckpointMissing(f"{workdir}: no DiT checkpoint at step {step} (kept: {kept})")
      saved = ckpt.restore_saved(step)
      ckpt.close()
      if saved is None:
        raise CheckpointMissing(
            f"{workdir}: no {name} checkpoint; run `sora-jax train --workdir={workdir}` first"
        )
      states[name] = saved["ema_params" if weights == "ema" else "params"]
      if name == "vae" and "disc" in states[name]:  # trained on real footage beside its discriminator
        states[name] = states[name]["vae"]
    if not dit:
      return cls(config, build_vae(config.vae), states["vae"], None, None, None)
    return cls(
        config,
        build_vae(config.vae),
        states["vae"],
        build_dit(config),
        states["dit"],
        read_stats(os.path.join(workdir, LATENT_STATS_FILE)),
    )

  def generate(self, prompts, *, num_frames, height, width, steps, guidance, seed, first_frames=None):
    """list[str] -> list of uint8 [num_frames, height, width, 3] (text-to-video).

    first_frames: optional uint8 [height, width, 3] images, one per prompt: image-to-video, the
    video opens on the given frame instead of a sampled one.
    """
    if first_frames is not None and len(first_frames) != len(prompts):
      raise ConfigError(f"{len(first_frames)} first frames for {len(prompts)} prompts: give one per prompt")
    requests = [
        Request(
            p,
            num_frames,
            height,
            width,
            given=() if first_frames is None else (Given(np.asarray(first_frames[i])[None], 0),),
        )
        for i, p in enumerate(prompts)
    ]
    return self.sample(requests, steps=steps, guidance=guidance, seed=seed)

  def sample(self, requests, *, steps, guidance, seed):
    """list[Request] -> list of uint8 videos [num_frames, H, W, 3], one per request.

    Requests of any size and mode share packed rows; each one's noise comes from its own seed,
    or else from fold_in(seed, its index), so its video does not depend on the others. Every
    input is checked and encoded before any sampling.
    """
    c = self.config
    if steps < 1:
      raise ConfigError(f"steps={steps}: the sampler needs at least 1 step")
    if not requests:
      raise ConfigError("nothing to sample: give at least one prompt")
    shapes = [self._latent_shape(r) for r in requests]
    self._check_memory(shapes, guidance)
    conditions, keys, motions = [], [], []
    for i, r in enumerate(requests):
      conditions.append(self._conditions(r, shapes[i]))
      keys.append(_noise_key(seed, i, r.seed))
      motions.append(self._motion(r, shapes[i]))
    ids = caption_ids(c, ["" if r.prompt is None else r.prompt for r in requests])
    # Two stages (sample.first_frame): frame 0 first, then the video with it held clean, as in
    # image-to-video training. "image": a text-to-image sample (Emu Video); "video": frame 0 of
    # a one-pass sample (with the request's other conditions), whose shape sits where its whole
    # track fits. Requests that give frame 0, or edit a video, have theirs already.
    staged = [
        i
        for i, r in enumerate(requests)
        if c.sample.first_frame != "joint"
        and shapes[i][0] > 1
        and r.edit is None
        and not any(cond.strength == 1.0 and cond.span(shapes[i][0])[0] == 0 for cond in conditions[i])
    ]
    if staged:
      first_keys = [(jax.random.fold_in(keys[i][0], 2**31 - 1), keys[i][1]) for i in staged]
      # "image" samples frame 0 alone, without the request's other conditions.
      image = c.sample.first_frame == "image"
      first = self._sample_latents(
          ids[staged],
          [(1,) + shapes[i][1:] if image else shapes[i] for i in staged],
          [[] if image else conditions[i] for i in staged],
          first_keys,
          steps,
          guidance,
          [motions[i] for i in staged],
      )
      for i, z in zip(staged, first):
        conditions[i] = conditions[i] + [Condition(z[:1], 0)]
    latents = self._sample_latents(ids, shapes, conditions, keys, steps, guidance, motions)
    return [self.decode(z) for z in latents]

  def initial_latents(self, requests, seed):
    """The initial latent of each request as `sample` draws it (one-stage requests)."""
    return [
        request_noise(*_noise_key(seed, i, r.seed), self._latent_shape(r)) for i, r in enumerate(requests)
    ]

  def _latent_shape(self, r):
    c = self.config
    check_video_size(r.num_frames, r.height, r.width, tuple(c.model.patch), what="requested size")
    if r.prompt is not None and not r.prompt.strip():
      raise ConfigError("prompt is empty: give a caption such as --prompt='a red circle moves to the right'")
    return (
        1 + (r.num_frames - 1) // VAE_TEMPORAL,
        r.height // VAE_SPATIAL,
        r.width // VAE_SPATIAL,
        c.vae.latent_channels,
    )

  def _conditions(self, r, latent_shape):
    """A request's given pixels -> Conditions in latent space (SDEdit: its whole source, guided
    down to t = strength)."""
    size = (r.height, r.width, 3)
    for given in r.given:
      if np.shape(given.frames)[1:] != size:
        raise ConfigError(f"a given frame is {np.shape(given.frames)[1:]}; this request needs {size}")
    conditions = [encode_given(self.encode, g.frames, g.at, r.num_frames, g.strength) for g in r.given]
    if r.edit is not None:
      if np.shape(r.edit) != (r.num_frames,) + size:
        raise ConfigError(
            f"the video to edit is {np.shape(r.edit)}; this request needs {(r.num_frames,) + size}"
        )
      check_edit_strength(r.strength)
      if r.strength < 1.0:  # at 1 the source is noised away: a fresh sample
        conditions.append(Condition(self.encode(r.edit), 0, 1.0 - r.strength))
    for cond in conditions:
      cond.span(latent_shape[0])
    return conditions

  def _motion(self, r, latent_shape):
    """A request's motion tokens where the DiT has a Tora adapter, else None."""
    from sora_jax.adapters import Adapter
    from sora_jax.data.trajectory import request_motion

    adapter = Adapter.of(self.config)
    tokens = int(np.prod(patch_grid(latent_shape[:3], tuple(self.config.model.patch))))
    encode = lambda videos: [self.encode(v) for v in videos]
    return request_motion(adapter and adapter.tora, self.config, r, tokens, encode)

  def encode(self, video):
    """uint8 video [1 + 4k, H, W, 3] -> standardised latent means [1 + k, h, w, C]."""
    ((mean, _),) = encode_videos(self.vae, self.vae_params, [np.asarray(video, np.uint8)], batch_size=1)
    return standardise(mean, self.latent_stats)

  def decode(self, latent):
    """Standardised latent [T, H, W, C] -> uint8 video, decoded in temporal chunks."""
    z = destandardise(latent, self.latent_stats)
    video = decode_chunked(
        self.vae, self.vae_params, jnp.asarray(z[None]), chunk_latents=self.config.sample.chunk_latents
    )
    return to_uint8(np.asarray(video[0]))

  def _sample_latents(self, ids, shapes, conditions, keys, steps, guidance, motions=None):
    """Standardised latents [T, H, W, C], one per (caption ids, latent shape, conditions, key,
    motion tokens or None)."""
    c = self.config
    motions = motions or [None] * len(shapes)
    patch = tuple(c.model.patch)
    examples, noise, release, start = [], [], [], []
    for text_ids, shape, conds, (key, index), motion in zip(ids, shapes, conditions, keys, motions):
      grid = patch_grid(shape[:3], patch)
      positions = grid_positions(grid)
      z, cond_mask, token_release = apply_conditions(np.zeros(shape, np.float32), conds, positions, patch[0])
      examples.append(
          {
              "tokens": patchify(z, patch),
              "positions": positions,
              "grid": np.array(grid, np.int32),
              "text_ids": text_ids,
              "cond_mask": cond_mask,
          }
      )
      if motion is not None:  # a prefix where the shape is (tokens in time order): frame 0 alone
        examples[-1]["motion"] = motion[: len(positions)]
      noise.append(patchify(request_noise(key, index, shape), patch))
      release.append(token_release)
      # SDEdit guides every generated token down to t = strength: its schedule starts there
      # (1, a full schedule, as soon as one generated token is not guided).
      generated = token_release[~cond_mask]
      start.append(float(generated.max()) if generated.size else 1.0)
    batch, places = self._pack(examples)
    rows, length = batch["segment_ids"].shape
    batch["noise"] = pack_values(noise, places, batch["tokens"].shape, 0.0)
    batch["release"] = pack_values(release, places, (rows, length), 1.0)
    batch["start"] = pack_values(np.float32(start), places, batch["grid"].shape[:2], 1.0, per_token=False)
    tokens = self._sample(batch, steps, float(guidance))
    return [
        unpatchify(t, e["grid"], patch, c.vae.latent_channels)
        for t, e in zip(unpack(np.asarray(tokens), examples, places), examples)
    ]

  def _pack(self, examples):
    rows, row_length, places = self._layout([len(e["tokens"]) for e in examples])
    return (
        pack(examples, places, rows=rows, row_length=row_length, max_per_row=self.config.train.max_per_row),
        places,
    )

  def _layout(self, lengths):
    """(rows, row_length, placements): rows of the training length (longer if one example needs
    it), as many as needed."""
    t = self.config.train
    row_length = max(t.row_length, -(-max(lengths) // 128) * 128)
    rows = 1
    while True:
      places = first_fit(lengths, rows=rows, row_length=row_length, max_per_row=t.max_per_row)
      if all(p is not None for p in places):
        return rows, row_length, places
      rows += 1

  def _check_memory(self, shapes, guidance):
    """One line with the estimated memory, before any work, for a call that cannot fit."""
    c = self.config
    patch = tuple(c.model.patch)
    rows, row_length, _ = self._layout([int(np.prod(patch_grid(s[:3], patch))) for s in shapes])
    largest = max(shapes, key=lambda s: int(np.prod(s)))
    estimate = memory.sampling_bytes(
        rows=rows,
        row_length=row_length,
        width=c.model.width,
        num_heads=c.model.num_heads,
        mlp_ratio=c.model.mlp_ratio,
        patch_dim=patch_dim(c),
        caption_tokens=c.train.max_per_row * c.model.text.max_len,
        guidance=guidance != 1.0,
        videos=len(shapes),
        latent_shape=largest,
        vae_base_channels=c.vae.base_channels,
        vae_channel_mult=tuple(c.vae.channel_mult),
        chunk_latents=c.sample.chunk_latents,
    )
    t, h, w, _ = largest
    memory.check_fits(
        estimate, f"sampling {1 + VAE_TEMPORAL * (t - 1)} frame(s) of {h * VAE_SPATIAL}x{w * VAE_SPATIAL}"
    )

  def _sample(self, batch, steps, guidance):
    b = with_text_embeds(self.config, {k: jnp.asarray(v) for k, v in batch.items()})
    # The unconditional pass of guidance: without the caption, and (sample.trajectory_guidance
    # "joint") without the trajectory too, zero motion tokens being the base's own model; with
    # "caption" it keeps the trajectory, so guidance pushes towards the caption alone.
    motion = b.get("motion")
    if motion is not None and self.config.sample.trajectory_guidance == "joint":
      motion = jnp.zeros_like(motion)
    null = (*null_text(self.config, b["text_ids"].shape), motion)
    return self._sampler(steps, guidance)(self.dit_params, b, null)

  def _sampler(self, steps, guidance):
    """The jitted sampler for (steps, guidance), built once and shared by copies of this pipeline
    with other weights (progress samples): each new jit would compile again. Keyed also by what
    it closes over (the DiT module, the diffusion settings), which copies may change."""
    key = (steps, guidance, self.dit, self.config.diffusion.to_json())
    if key not in self._samplers:
      c = self.config
      objective = make_objective(c.diffusion)

      def run(params, b, null):
        apply = lambda *a: self.dit.apply({"params": params}, *a)
        denoise = guided(apply, guidance, b["segment_ids"], b["positions"], b["cond_mask"])
        shift = resolution_shift(jnp.prod(b["grid"], -1), c.diffusion.shift_base_tokens)
        times = objective.sampling_times(steps, shift, b["start"])
        return sample(
            objective,
            denoise,
            b["noise"],
            times,
            b["segment_ids"],
            b["cond_mask"],
            b["tokens"],
            b["release"],
            condition_inputs(b),
            null,
        )

      self._samplers[key] = jax.jit(run)
    return self._samplers[key]
