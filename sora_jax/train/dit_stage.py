"""Stage 2: encode the synthetic videos once, then train the packed DiT on their latents."""

import dataclasses
import os
import pickle
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.adapters import join, new_params
from sora_jax.config import VAE_TEMPORAL
from sora_jax.data.budget import drop_rate, drop_tokens
from sora_jax.data.conditions import apply_conditions, draw_conditions, draw_strategy
from sora_jax.data.latent_cache import cached_latents, encoded_clips
from sora_jax.data.latents import channel_stats, encode_videos, standardise
from sora_jax.data.packing import empty_batch
from sora_jax.data.stream import PackedBatches, epoch_order
from sora_jax.data.synthetic import ShapesSource, caption
from sora_jax.data.trajectory import motion_dim
from sora_jax.diffusion import make_objective
from sora_jax.diffusion.loss import diffusion_loss
from sora_jax.files import atomic_path, write_json
from sora_jax.models.build import (
    build_dit,
    caption_ids,
    frozen_encoder,
    patch_dim,
    text_dim,
    condition_inputs,
    with_text_embeds,
)
from sora_jax.models.patch import grid_positions, patch_grid, patchify
from sora_jax.parallel.sharding import (
    MeshFunction,
    batch_sharding,
    global_batch,
    init_sharded,
    sharded_train_step,
)
from sora_jax.scaling.mup import Mup, adam_eps
from sora_jax.train.flops import dit_train_flops
from sora_jax.train.loop import fit, host_rng
from sora_jax.train.state import create_state, make_optimizer, make_train_step
from sora_jax.train.validation import validation_loss, validation_set

CACHE_FILE = "latent_cache.pkl"


def training_latents(config, workdir, vae, vae_params):
  """(latents: index -> (mean, std), caption_at(i, rng) -> str, stats[, cached_text]): the
  DiT's training data, from cached latents (config.data.latents), prepared clips encoded as they
  are read (config.data.clips), or else the synthetic shapes. cached_text(i, caption) -> the
  caption's cached (ids, embeddings) for a frozen encoder, or None (computed on device)."""
  share = config.data.generated_caption_share
  if config.data.latents:
    identity = None
    if frozen_encoder(config) is not None:
      from sora_jax.models.frozen_text import identity as text_identity

      identity = text_identity(config.model.text)
    data = cached_latents(config.data.latents, share, identity)
    return data, data.caption_at, data.stats, data.cached_text
  if config.data.clips:
    data = encoded_clips(
        config.data.clips,
        vae,
        vae_params,
        budget=config.train.row_length,
        patch=tuple(config.model.patch),
        generated_share=share,
    )
    return data, data.caption_at, data.stats
  return shapes_data(config, latent_cache(config, workdir, vae, vae_params))


def shapes_data(config, cache):
  """The synthetic latent cache as training data; captions are re-drawn (short/long forms), and
  its 1-frame examples are the opening frames of moving tracks. Entries are (mean, std) or,
  with the cache's still tails, (mean, std, still tail)."""
  caption_at = lambda i, rng: caption(cache["specs"][i], rng, opening_motion=config.data.opening_frame_motion)
  latents = cache["latents"]
  if "still_tails" in cache:  # caches written before still tails hold (mean, std) only
    latents = [(m, s, t) for (m, s), t in zip(latents, cache["still_tails"])]
  return latents, caption_at, cache["stats"]


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
  source = ShapesSource.of_config(config)
  examples = [source[i] for i in range(config.data.num_examples)]
  full = encode_videos(vae, vae_params, [e["video"] for e in examples])
  lengths = host_rng(config.seed, 3, 0).choice(frames, size=len(examples))
  specs, latents = [], []
  for e, (mean, std), f in zip(examples, full, lengths):
    keep = 1 + (int(f) - 1) // VAE_TEMPORAL
    specs.append(dataclasses.replace(e["spec"], num_frames=int(f)))
    latents.append((mean[:keep], std[:keep]))
  # Each video's last frame as a still group, as sampling encodes a picture given there
  # (conditions.still_latent: the image encoded alone), for the image_tail strategy.
  stills = encode_videos(
      vae, vae_params, [e["video"][int(f) - 1 : int(f)] for e, f in zip(examples, lengths)]
  )
  tails = [mean if f > 1 else None for (mean, _), f in zip(stills, lengths)]
  cache = {"latents": latents, "specs": specs, "stats": channel_stats(latents), "still_tails": tails}
  with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a killed run never leaves a half cache
    pickle.dump(cache, f)
  return cache


def latent_example(config, latent, stats, caption_text, conditions=(), cached_text=None):
  """Latent [T, H, W, C] (standardised here) + caption -> a packable example; `conditions` are
  written into the latent and held clean (`cond_mask`); `cached_text`: the caption's (ids,
  embeddings) from a cache, else the ids are made here."""
  patch = tuple(config.model.patch)
  grid = patch_grid(latent.shape[:3], patch)
  example = {"positions": grid_positions(grid), "grid": np.array(grid, np.int32)}
  if conditions:
    latent, example["cond_mask"], _ = apply_conditions(latent, conditions, example["positions"], patch[0])
  example["tokens"] = patchify(standardise(latent, stats), patch).astype(np.float32)
  if cached_text is None:
    example["text_ids"] = caption_ids(config, [caption_text])[0]
  else:
    example["text_ids"], example["text_embeds"] = cached_text
  return example


def dit_examples(config, data, shard=0, num_shards=1, motion=None):
  """example_at(position, step) -> packable example: the stream of host `shard`, going through
  the data in a new random order each epoch (hosts take alternate positions).

  data: (latents, caption_at, stats[, cached_text]) as `training_latents` returns; a latent
  entry is (mean, std) or (mean, std, still tail) (`shapes_data`). motion (a Tora fine-tune):
  {"dense": [...], "sparse": [...]}, each example's motion tokens of its whole track
  (finetune_stage.motion_cache); each example takes one, dense w.p. adapter.dense_share.
  """
  latents, caption_at, stats, *rest = data
  cached_text = rest[0] if rest else lambda i, caption: None
  order = epoch_order(len(latents), config.seed, shard, num_shards)
  token_drop = tuple(config.train.token_drop)
  patch_t = config.model.patch[0]

  def example_at(position, step):
    rng = host_rng(config.seed, 2, position, shard)
    index = order[position]
    mean, std, *rest = latents[index]
    still_tail = rest[0] if rest else None  # see shapes_data
    z = mean + std * rng.standard_normal(mean.shape).astype(np.float32)  # posterior sample
    text = "" if rng.random() < config.data.caption_dropout else caption_at(index, rng)
    # A mask strategy per example (image-to-video, extension, interpolation...): the given
    # latent frames are its own (a still tail in place of its last group for image_tail), held
    # clean; the first latent frame is exactly the first video frame (causal VAE), so the image
    # head is image-to-video.
    strategy = draw_strategy(config.data.cond, rng) if len(z) // patch_t > 1 else None
    conditions = draw_conditions(strategy, z, patch_t, rng, still_tail=still_tail) if strategy else []
    example = latent_example(config, z, stats, text, conditions, cached_text(index, text))
    if motion is not None:
      kind = "dense" if rng.random() < config.adapter.dense_share else "sparse"
      example["motion"] = motion[kind][index][: len(example["tokens"])]  # the example's latent prefix
    rate = drop_rate(step, *token_drop)
    return drop_tokens(example, rate, rng) if rate > 0 else example

  return example_at


def dit_batches(config, data, shard=0, num_shards=1, motion=None):
  """The packed batches of host `shard` (rows / num_shards rows each), checkpointable."""
  t = config.train
  flops = lambda batch: {
      "model_flops": dit_train_flops(
          config.model, patch_dim(config), config.model.text.max_len, batch["grid"]
      )
  }
  return PackedBatches(
      dit_examples(config, data, shard, num_shards, motion),
      rows=t.rows // num_shards,
      row_length=t.row_length,
      max_per_row=t.max_per_row,
      batch_metrics=flops,
  )


@dataclasses.dataclass(frozen=True)
class DiTTraining:
  """The pure pieces of DiT training, shared by `train`, `aot` and the sharding tests."""

  model: Any
  init_params: Callable  # (rng[, adapted]) -> the model's params (adapted: with the adapter's
  # modules, e.g. Tora's, the batch's motion given), carrying logical axis names
  init_state: Callable  # rng -> TrainState whose params carry logical axis names
  loss_fn: Callable  # (params, batch, rng[, base params]) -> (loss, metrics)
  train_step: Callable  # (state, batch, rng[, base params]) -> (state, metrics)
  batch_shapes: dict  # {key: ShapeDtypeStruct} of the global packed batch

  def denoise(self, params, batch, t, **apply_kwargs):
    """One DiT evaluation of a packed batch at per-example times t [B, E] (a sampling step);
    apply_kwargs go to `Module.apply` (e.g. capture_intermediates, for the coordinate check)."""
    return self.model.apply(
        {"params": params},
        batch["tokens"],
        batch["segment_ids"],
        batch["positions"],
        batch["cond_mask"],
        t,
        *condition_inputs(batch),
        **apply_kwargs,
    )


def dit_training(config, adapter=None):
  """The DiT's training, or with `adapter` (adapters.Adapter) a fine-tune: the state holds the
  adapter's params only, and loss and step take the frozen base's params as a last argument."""
  model = build_dit(config)
  objective = make_objective(config.diffusion)
  tc = config.train
  mup = Mup.of(config)
  tx, schedule = make_optimizer(
      lr=tc.lr,
      warmup=tc.warmup,
      total_steps=tc.steps,
      weight_decay=tc.weight_decay,
      grad_clip=tc.grad_clip,
      schedule=tc.schedule,
      accumulate=tc.grad_accum,
      eps=adam_eps(tc, config.model),
      scale_updates=mup.scale_updates() if mup else None,
  )
  batch_shapes = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
      empty_batch(
          1,
          tc.row_length,
          tc.max_per_row,
          patch_dim(config),
          config.model.text.max_len,
          text_dim(config),
          jnp.dtype(config.model.text.embed_dtype),
          motion_dim(config) if adapter and adapter.tora else None,
      ),
  )
  batch_shapes = {k: jax.ShapeDtypeStruct((tc.rows,) + v.shape[1:], v.dtype) for k, v in batch_shapes.items()}

  def init_params(rng, adapted=False):
    # Zeros built inside the trace: nothing of batch size is baked into the program, and the
    # forward pass is dead code (only the params are returned).
    x = {k: jnp.zeros(v.shape, v.dtype) for k, v in batch_shapes.items() if adapted or k != "motion"}
    t0 = jnp.zeros(x["grid"].shape[:2])
    return model.init(
        rng, x["tokens"], x["segment_ids"], x["positions"], x["cond_mask"], t0, *condition_inputs(x)
    )["params"]

  def loss(params, batch, rng):
    apply = lambda *a: model.apply({"params": params}, *a)
    return diffusion_loss(apply, objective, batch, rng, shift_base_tokens=config.diffusion.shift_base_tokens)

  if adapter is None:

    def init_state(rng):
      params = init_params(rng)
      return create_state(mup.rescale_init(params) if mup else params, tx)

    loss_fn = lambda params, batch, rng: (loss(params, batch, rng), {})
  else:

    def init_state(rng):
      with adapter.context():
        full = init_params(rng, True)  # the base's part is dead code: only the adapter's is kept
      # A new function object: JAX caches traces by function, not by the adapter's context, so
      # a trace of init_params itself could come back from a call made inside one.
      base = jax.eval_shape(lambda r: init_params(r), rng)
      return create_state(new_params(full, base), tx)

    def loss_fn(params, batch, rng, base):
      with adapter.context():
        return loss(join(base, params), batch, rng), {}

  return DiTTraining(
      model,
      init_params,
      init_state,
      loss_fn,
      make_train_step(loss_fn, tx, schedule, tc.ema_decay),
      batch_shapes,
  )


def validation_hook(config, workdir, vae, vae_params, training, mesh, shardings, stats):
  """hook(step, state, writer): the fixed-noise validation loss of the EMA weights every
  `validation.every` steps, to TensorBoard and workdir/validation/step_N.json."""
  examples = validation_set(config, workdir, vae, vae_params)
  denoise = MeshFunction(training.denoise, mesh)
  rows = config.train.rows // jax.process_count()
  lo = jax.process_index() * rows
  put = lambda batch: with_text_embeds(
      config,
      global_batch({k: v[lo : lo + rows] for k, v in batch.items()}, shardings, config.train.rows),
      shardings,
  )

  def hook(step, state, writer):
    if step % config.validation.every:
      return
    report = validation_loss(config, denoise, state.ema_params, examples, stats, put_batch=put)
    if jax.process_index():
      return
    write_json(os.path.join(workdir, "validation", f"step_{step}.json"), report | {"step": step})
    if writer:
      writer.add_scalar("validation/loss", report["mean"], step)
      for t, loss in zip(report["times"], report["per_time"]):
        writer.add_scalar(f"validation/loss_t{t:g}", loss, step)

  return hook


def train_dit(config, workdir, vae, vae_params, mesh, on_sample=None):
  """Returns (dit module, EMA params, latent stats) after training or resuming the DiT stage.

  on_sample(step, ema_params, latent_stats, writer) runs every `train.sample_every` steps."""
  data = training_latents(config, workdir, vae, vae_params)
  training = dit_training(config)
  if frozen_encoder(config) is not None:
    frozen_encoder(config).on_mesh(mesh)
  state, state_sharding = init_sharded(training.init_state, jax.random.key(config.seed), mesh)
  shardings = batch_sharding(training.batch_shapes, mesh)
  step_fn = sharded_train_step(training.train_step, mesh, state_sharding, shardings)

  tc = config.train

  def sample_hook(step, state, writer):
    if step % tc.sample_every == 0:
      on_sample(step, state.ema_params, data[2], writer)

  hooks = [sample_hook] if on_sample is not None and tc.sample_every else []
  if config.validation.every:
    hooks.append(validation_hook(config, workdir, vae, vae_params, training, mesh, shardings, data[2]))
  state = fit_dit("dit", config, workdir, state, step_fn, data, shardings, hooks)
  return training.model, state.ema_params, data[2]


def fit_dit(name, config, workdir, state, step_fn, data, shardings, hooks=(), motion=None):
  """`fit` stage `name` on the DiT's packed batches of `data` (with Tora's `motion`, see
  `dit_examples`), as config.train says (the DiT stage, and a fine-tune's adapter)."""
  tc = config.train
  return fit(
      name,
      workdir=workdir,
      state=state,
      train_step=step_fn,
      data=dit_batches(config, data, jax.process_index(), jax.process_count(), motion),
      # A frozen encoder's embeddings, where the data has none cached, are computed here on
      # device: a jitted call of their own before each step, outside the differentiated loss.
      put_batch=lambda local: with_text_embeds(config, global_batch(local, shardings, tc.rows), shardings),
      config=config.to_dict(),
      num_steps=tc.steps,
      seed=config.seed + 1,
      log_every=tc.log_every,
      checkpoint_every=tc.checkpoint_every,
      max_nonfinite_in_row=tc.max_nonfinite_in_row,
      peak_flops=tc.peak_flops,
      keep_checkpoints=tc.keep_checkpoints,
      keep_period=tc.keep_period,
      keep_steps=tuple(tc.keep_steps),
      hooks=hooks,
      prefetch=tc.prefetch,
  )
