"""`sora-jax finetune`: an adapter trained on a frozen base, with the DiT stage's data, loss and
train loop (checkpoints, exact resume, metrics), then its samples scored with and without it.

The base's folder is only read: its config (the model, the latent standardisation, the VAE) is
the fine-tune's, with the fine-tune config's keys laid over it; its EMA weights are the frozen
argument of every step; the state, and so every checkpoint, holds the adapter's params alone.
"""

import dataclasses
import json
import os
import pickle

import jax
import numpy as np

from sora_jax.adapters import CHECKPOINT_NAME, Adapter, weights_hash, write_identity
from sora_jax.config import ConfigError, validate
from sora_jax.data.video_io import write_video
from sora_jax.evaluation.shapes import (
    analyse_video,
    camera_from_growth,
    centroids,
    colour_growth,
    detect_colours,
    dominant_colour,
    eval_prompts,
    palette,
    short_caption,
    trajectory_error,
)
from sora_jax.data import trajectory
from sora_jax.data.latents import encode_videos, standardise
from sora_jax.data.synthetic import TRACKS, curved_path, filmed, shape_masks
from sora_jax.files import atomic_path, write_json
from sora_jax.generate import CONFIG_FILE, Pipeline, Request, sample_settings
from sora_jax.models.build import frozen_encoder
from sora_jax.parallel.mesh import check_divisibility, make_mesh
from sora_jax.parallel.sharding import (
    abstract_sharded,
    batch_sharding,
    init_sharded,
    sharded_train_step,
)
from sora_jax.train.dit_stage import (
    dit_training,
    fit_dit,
    latent_cache,
    shapes_data,
    training_latents,
)

EVAL_FILE = "finetune_eval.json"
MOTION_CACHE = "motion_cache.pkl"


def motion_cache(config, workdir, specs, base):
  """{"dense": [...], "sparse": [...]}: the motion tokens of each cached example's whole track
  (examples train on their latent prefix), its shape's dense flow and its centroid's track alone
  (data/trajectory.py), written once per fine-tune folder."""
  path = os.path.join(workdir, MOTION_CACHE)
  if os.path.exists(path):
    with open(path, "rb") as f:
      return pickle.load(f)
  tora, patch = Adapter.of(config).tora, tuple(config.model.patch)
  full = [dataclasses.replace(s, num_frames=max(config.data.frames)) for s in specs]
  encode = lambda videos: [
      standardise(mean, base.latent_stats) for mean, _ in encode_videos(base.vae, base.vae_params, videos)
  ]
  masks = [shape_masks(s) for s in full]
  # The shape's pixel centroid is what a trajectory asks for: what TrajError's tracker sees (a
  # triangle's lies r/3 below its box centre, synthetic.track).
  tracks = [centroids(m) for m in masks]
  dense = [trajectory.dense_maps(m, t) for m, t in zip(masks, tracks)]
  sparse = [trajectory.displacement_maps([t], s.height, s.width, tora.sigma) for s, t in zip(full, tracks)]
  cache = {
      name: trajectory.motion_tokens(maps, tora.extractor, patch, encode)
      for name, maps in (("dense", dense), ("sparse", sparse))
  }
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    pickle.dump(cache, f)
  return cache


def overlay(base_config, overrides):
  """The base run's config with the fine-tune config's keys set over it (every key must exist)."""
  config = base_config.copy_and_resolve_references()

  def put(target, values, prefix):
    for key, value in values.items():
      if key not in target:
        raise ConfigError(f"fine-tune config key {prefix}{key} is not a key of the run config")
      if hasattr(value, "items"):
        put(target[key], value, f"{prefix}{key}.")
      else:
        target[key] = value

  put(config, overrides, "")
  return config


def saved_config(base_config, folder):
  """The config the fine-tune in `folder` ran with (its config.json), laid over the base's:
  keys newer than the fine-tune take the base's values."""
  with open(os.path.join(folder, CONFIG_FILE)) as f:
    return overlay(base_config, json.load(f))


def finetune(base_dir, overrides, workdir):
  """Train the adapter of `overrides` (a fine-tune config) on the run in `base_dir`; returns the
  evaluation summary (with and without the adapter)."""
  base = Pipeline.load(base_dir)
  config = overlay(base.config, overrides)
  validate(config)
  adapter = Adapter.of(config)
  if adapter is None:
    raise ConfigError("adapter.kind is '': a fine-tune config names its adapter (configs/finetune/)")
  mesh = make_mesh(config.mesh)
  check_divisibility(config, mesh)
  if frozen_encoder(config) is not None:  # a T5 base: its encoder laid out on this mesh
    frozen_encoder(config).on_mesh(mesh)
  training = dit_training(config, adapter)
  rng = jax.random.key(config.seed)
  # A fresh lambda under the adapter's context: JAX's trace cache keys on the function, and
  # init_params traced here must not answer the base's traces below.
  adapter.check_targets(lambda: jax.eval_shape(lambda r: training.init_params(r), rng))
  os.makedirs(workdir, exist_ok=True)
  write_identity(workdir, config, base_dir, weights_hash(base.dit_params))
  write_json(os.path.join(workdir, CONFIG_FILE), config.to_dict())

  # The base's latent standardisation, whatever the new clips' statistics: the frozen model
  # reads latents on its own scale.
  motion = None
  if adapter.tora:  # the shapes' tracks, made into motion tokens once
    cache = latent_cache(config, workdir, base.vae, base.vae_params)
    data = shapes_data(config, cache)
    motion = motion_cache(config, workdir, cache["specs"], base)
  else:
    data = training_latents(config, workdir, base.vae, base.vae_params)
  data = (data[0], data[1], base.latent_stats, *data[3:])
  state, state_sharding = init_sharded(training.init_state, rng, mesh)
  _, base_sharding = abstract_sharded(training.init_params, rng, mesh)
  frozen = jax.device_put(base.dit_params, base_sharding)
  shardings = batch_sharding(training.batch_shapes, mesh)
  step = sharded_train_step(training.train_step, mesh, state_sharding, shardings, (base_sharding,))
  train_step = lambda s, batch, key: step(s, batch, key, frozen)
  state = fit_dit(CHECKPOINT_NAME, config, workdir, state, train_step, data, shardings, motion=motion)
  adapted = dataclasses.replace(
      base, config=config, dit_params=adapter.merged(base.dit_params, jax.device_get(state.ema_params))
  )
  summary = {
      "adapter_params": sum(x.size for x in jax.tree.leaves(state.ema_params)),  # the state is the adapter
      "base_params": sum(x.size for x in jax.tree.leaves(base.dit_params)),
  }
  summary["adapter_share"] = summary["adapter_params"] / summary["base_params"]
  evaluate = evaluate_tora if adapter.tora else evaluate_adapter
  summary.update(evaluate(base, adapted, workdir, config))
  write_json(os.path.join(workdir, EVAL_FILE), summary)
  return summary


def evaluate_adapter(base, adapted, workdir, config):
  """The held-out shapes prompts (captions naming no camera; in the config's `data.colours`, taken
  in turn, where it names some: a new colour word) sampled over `sample.adapter_eval_seeds` seeds
  with the base alone and with the adapter: how often the evaluator sees a camera motion (and
  how much the shapes grow: the spread of evaluation.shapes.scale_growth), the caption's colour
  (read back in a palette with the new colours) and its direction. For a camera adapter,
  `base_filmed` scores the base's own samples filmed by the true camera: a perfect adapter's
  share on this base, since the base's own size wander stays in them. Seed 0's videos go to
  workdir/samples/{base,adapter}/."""
  s = config.sample
  prompts = eval_prompts(num_frames=s.num_frames, height=s.height, width=s.width)
  colours = tuple(config.data.colours)
  if colours:
    for i, p in enumerate(prompts):
      p["colour"] = colours[i % len(colours)]
      p["caption"] = short_caption(p["colour"], p["shape"], p["direction"])
  names = palette(colours)
  captions = [p["caption"] for p in prompts]
  report = {}
  for name, pipe in (("base", base), ("adapter", adapted)):
    scores, filmed_growths = [], []
    for seed in range(s.adapter_eval_seeds):
      videos = pipe.generate(captions, seed=seed, **sample_settings(config))
      for i, (p, video) in enumerate(zip(prompts, videos)):
        if seed == 0 and jax.process_index() == 0:
          write_video(
              os.path.join(workdir, "samples", name, f"{i:02d}_{p['colour']}_{p['shape']}.mp4"),
              video,
              fps=s.fps,
          )
        r = analyse_video(video, p["colour"], p["direction"], p["shape"], names)
        scores.append((colour_growth(video, p["colour"], names), r["colour_ok"], r["direction_ok"]))
        if name == "base" and config.data.camera:
          filmed_growths.append(colour_growth(filmed(video, config.data.camera), p["colour"], names))
    report[name] = {
        "videos": len(scores),
        **camera_scores([x[0] for x in scores]),
        "colour_accuracy": float(np.mean([x[1] for x in scores])),
        "direction_accuracy": float(np.mean([x[2] for x in scores])),
    }
    if filmed_growths:
      report["base_filmed"] = {"videos": len(filmed_growths), **camera_scores(filmed_growths)}
  return report


def camera_scores(growths):
  """The share of videos seen with each camera motion, and how much their shapes grow over a clip
  (the true zoom: 1.5x; none: 1x) over the videos where it could be read: the spread says how
  steadily a model holds sizes."""
  known = [g for g in growths if g is not None]
  return {
      "camera": {c: float(np.mean([camera_from_growth(g) == c for g in growths])) for c in ("zoom_in",)},
      "scale_growth_p10_p50_p90": np.percentile(known, [10, 50, 90]).tolist() if known else None,
  }


def evaluate_tora(base, adapted, workdir, config):
  """Trajectory control on the held-out (colour, shape) prompts, each asked to follow a curved
  path of its own (Bezier, zig-zag, circle, stop in turn; paths no training video has), its
  caption naming no direction, over `sample.adapter_eval_seeds` seeds: TrajError (the generated
  shape's centroid from the asked point, per frame, / min(H, W)) and colour, with the adapter
  and the trajectory, and with the base alone (no control). Seed 0's videos, the asked path
  drawn on, go to workdir/samples/{base,adapter}/."""
  s = config.sample
  prompts = eval_prompts(num_frames=s.num_frames, height=s.height, width=s.width)
  radius = 0.17 * min(s.height, s.width)
  kinds = TRACKS[1:]
  paths = [
      curved_path(
          kinds[i % len(kinds)], np.random.default_rng([7919, i]), s.num_frames, s.height, s.width, radius
      )
      for i in range(len(prompts))
  ]
  report = {}
  for name, pipe in (("base", base), ("adapter", adapted)):
    scores = []
    for seed in range(s.adapter_eval_seeds):
      requests = [
          Request(
              f"a {p['colour']} {p['shape']} moves",
              s.num_frames,
              s.height,
              s.width,
              seed=(seed, i),
              trajectories=(path,) if name == "adapter" else (),
          )
          for i, (p, path) in enumerate(zip(prompts, paths))
      ]
      videos = pipe.sample(requests, steps=s.steps, guidance=s.guidance, seed=seed)
      for i, (p, path, video) in enumerate(zip(prompts, paths, videos)):
        if seed == 0 and jax.process_index() == 0:
          write_video(
              os.path.join(workdir, "samples", name, f"{i:02d}_{p['colour']}_{p['shape']}.mp4"),
              trajectory.draw_tracks(video, [path]),
              fps=s.fps,
          )
        error, seen = trajectory_error(video, p["colour"], path)
        colour = dominant_colour(detect_colours(video)) == p["colour"]
        scores.append((error, seen, colour))
    errors = [x[0] for x in scores if not np.isnan(x[0])]
    report[name] = {
        "videos": len(scores),
        "trajectory_error": float(np.mean(errors)) if errors else None,  # None: never seen
        "trajectory_error_per_video": [None if np.isnan(x[0]) else round(x[0], 4) for x in scores],
        "frames_seen": float(np.mean([x[1] for x in scores])),
        "colour_accuracy": float(np.mean([x[2] for x in scores])),
    }
  return report
