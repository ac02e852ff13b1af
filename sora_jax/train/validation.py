"""Fixed-noise validation loss: a number that only the weights change.

The diffusion loss of training is noisy (a random time and noise per example) and depends on
how examples were packed. Validation instead scores a fixed set of examples at a fixed grid of
K times (`validation.times`), each (example, time) with its own noise drawn from
fold_in(fold_in(key(validation.seed), example id), time index). Each example's loss is the mean
over its own tokens, so the figure does not depend on batch size, packing, row length, mesh or
host count (tested to 1e-6). Reported per time (mean and standard error over examples), as a
mean over times, and per (frames, height, width) bucket.

The set (shapes data): the held-out prompts' true clips at the sampling size (captions that
training never sees), and `validation.train_sample` videos drawn from the training distribution
with the validation seed (other videos than training's, the same kind). Real data: the first
`validation.real_clips` clips of the dataset's 'validation' split (whole videos that training
never sees: `sora-jax prepare --validation_fraction`), resized to the token budget as training
resizes them; from cached latents, the split `cache-latents` encoded beside them. All are the
run's VAE posterior means, standardised with the training statistics; the encoded set is
cached in the workdir.
"""

import dataclasses
import hashlib
import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.config import VAE_SPATIAL, VAE_TEMPORAL, ConfigError
from sora_jax.data.latents import encode_videos
from sora_jax.data.packing import first_fit, pack, pack_values
from sora_jax.data.synthetic import ShapesSource, caption
from sora_jax.diffusion import make_objective
from sora_jax.evaluation.shapes import eval_prompts, true_clip, true_spec
from sora_jax.files import atomic_path
from sora_jax.models.build import with_text_embeds

VALIDATION_FILE = "validation_set.pkl"


def _set_key(config):
  """What the encoded set depends on (besides the VAE): a rebuilt set if any of it changes."""
  v, d, s = config.validation, config.data, config.sample
  parts = (
      v.seed,
      v.train_sample,
      v.held_out,
      v.real_clips,
      d.clips,
      d.latents,
      config.train.row_length,
      tuple(d.frames),
      tuple(map(tuple, d.sizes)),
      d.textured_fraction,
      s.num_frames,
      s.height,
      s.width,
  )
  return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def validation_set(config, workdir, vae, vae_params):
  """[{"latent": [T, h, w, C] posterior mean, "caption", "bucket": (frames, H, W)}], built once
  per workdir (and settings)."""
  path = os.path.join(workdir, VALIDATION_FILE)
  key = _set_key(config)
  if os.path.exists(path):
    with open(path, "rb") as f:
      cached = pickle.load(f)
    if cached["key"] == key:
      return cached["examples"]
  if config.data.latents or config.data.clips:
    examples = _real_examples(config, vae, vae_params)
  else:
    examples = _shapes_examples(config, vae, vae_params)
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    pickle.dump({"key": key, "examples": examples}, f)
  return examples


def _bucket(latent):
  """(frames, height, width) of the video a latent [T, h, w, C] decodes to."""
  t, h, w = latent.shape[:3]
  return (1 + VAE_TEMPORAL * (t - 1), VAE_SPATIAL * h, VAE_SPATIAL * w)


def _real_examples(config, vae, vae_params):
  """The first `validation.real_clips` clips of the data's validation split."""
  from sora_jax.data.latent_cache import VALIDATION_DIR, latent_source, resize_to_budget
  from sora_jax.data.prepare import clip_source

  count = config.validation.real_clips
  if config.data.latents:
    folder = os.path.join(config.data.latents, VALIDATION_DIR)
    if not os.path.isdir(folder):
      raise ConfigError(
          f"validation: data.latents={config.data.latents} has no {VALIDATION_DIR}/ split; run "
          "`sora-jax cache-latents` on clips prepared with --validation_fraction"
      )
    source = latent_source(folder)
    records = [source[i] for i in range(min(count, len(source)))]
    means, captions = [r["mean"] for r in records], [r["caption"] for r in records]
  else:
    clips = clip_source(config.data.clips, "validation")
    chosen = [clips[i] for i in range(min(count, len(clips)))]
    videos = [
        resize_to_budget(c["video"], config.train.row_length, tuple(config.model.patch)) for c in chosen
    ]
    means = [mean for mean, _ in encode_videos(vae, vae_params, videos)]
    captions = [c["caption"] for c in chosen]
  return [{"latent": m, "caption": text, "bucket": _bucket(m)} for m, text in zip(means, captions)]


def _shapes_examples(config, vae, vae_params):
  """The held-out prompts' true clips and a sample of the training distribution."""
  v = config.validation
  videos, captions = [], []
  if v.held_out:
    s = config.sample
    for i, p in enumerate(eval_prompts(num_frames=s.num_frames, height=s.height, width=s.width)):
      videos.append(true_clip(p, i))
      captions.append(caption(true_spec(p, i)))
  source = ShapesSource(
      v.seed,
      frames=(max(config.data.frames),),
      sizes=tuple(map(tuple, config.data.sizes)),
      textured=config.data.textured_fraction,
  )
  lengths = np.random.default_rng([v.seed, 1]).choice(tuple(config.data.frames), size=v.train_sample)
  for i, frames in enumerate(lengths):
    item = source[i]
    videos.append(item["video"][: int(frames)])
    captions.append(caption(dataclasses.replace(item["spec"], num_frames=int(frames))))
  return [
      {"latent": mean, "caption": text, "bucket": tuple(int(n) for n in video.shape[:3])}
      for (mean, _), text, video in zip(encode_videos(vae, vae_params, videos), captions, videos)
  ]


def _items(config, examples, stats):
  """Every (example, time) as a packable example with its noised tokens, target and time."""
  from sora_jax.train.dit_stage import latent_example  # here: dit_stage imports this module

  objective = make_objective(config.diffusion)
  base = jax.random.key(config.validation.seed)
  items = []
  for i, ex in enumerate(examples):
    # The example as training makes it (standardised, patchified, captioned), unconditioned.
    common = latent_example(config, ex["latent"], stats, ex["caption"])
    x0 = common.pop("tokens")
    for k, t in enumerate(config.validation.times):
      noise = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.fold_in(base, i), k), x0.shape))
      items.append(
          common
          | {
              "tokens": np.asarray(objective.corrupt(x0, noise, t), np.float32),
              "target": np.asarray(objective.target(x0, noise, t), np.float32),
              "t": float(t),
              "example": i,
              "time_index": k,
          }
      )
  return items


def validation_loss(config, denoise, params, examples, stats, *, put_batch=None):
  """denoise(params, batch, t [B, E]) -> prediction [B, L, D] (a jitted, possibly sharded
  function) -> the report. Rows are packed `train.rows` at a time, as training packs them;
  put_batch turns a host batch into device arrays (a sharded global batch on a mesh)."""
  tc = config.train
  items = _items(config, examples, stats)
  lengths = [len(item["tokens"]) for item in items]
  places = first_fit(lengths, rows=len(items), row_length=tc.row_length, max_per_row=tc.max_per_row)
  losses = np.zeros((len(examples), len(config.validation.times)))
  used_rows = max(r for r, _, _ in places) + 1
  for start in range(0, used_rows, tc.rows):
    chosen = [
        (item, (r - start, slot, off))
        for item, (r, slot, off) in zip(items, places)
        if start <= r < start + tc.rows
    ]
    batch_items, batch_places = [c[0] for c in chosen], [c[1] for c in chosen]
    batch = pack(
        batch_items, batch_places, rows=tc.rows, row_length=tc.row_length, max_per_row=tc.max_per_row
    )
    t = pack_values(
        [np.float32(it["t"]) for it in batch_items],
        batch_places,
        (tc.rows, tc.max_per_row),
        0.0,
        per_token=False,
    )
    target = pack_values([it["target"] for it in batch_items], batch_places, batch["tokens"].shape, 0.0)
    device_batch = (
        put_batch(batch)
        if put_batch
        else with_text_embeds(config, {k: jnp.asarray(v) for k, v in batch.items()})
    )
    pred = fetch(denoise(params, device_batch, jnp.asarray(t))).astype(np.float64)
    err = np.square(pred - target).mean(-1)
    for it, (r, _, off) in zip(batch_items, batch_places):
      losses[it["example"], it["time_index"]] = err[r, off : off + len(it["tokens"])].mean()
  return summarise(losses, config.validation.times, [ex["bucket"] for ex in examples])


def summarise(losses, times, buckets):
  """losses [examples, K] -> per time mean and standard error, their mean, per-bucket means."""
  n = len(losses)
  sem = losses.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(losses.shape[1])
  by_bucket = {}
  for b in sorted(set(buckets)):
    rows = [i for i, x in enumerate(buckets) if x == b]
    by_bucket["x".join(map(str, b))] = {"mean": float(losses[rows].mean()), "examples": len(rows)}
  return {
      "mean": float(losses.mean()),
      "standard_error": float(losses.mean(1).std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
      "times": [float(t) for t in times],
      "per_time": [float(x) for x in losses.mean(0)],
      "per_time_standard_error": [float(x) for x in sem],
      "buckets": by_bucket,
      "examples": n,
      "per_example": losses.tolist(),
  }


def fetch(x):
  """A (possibly multi-host) global array as one numpy array on every host."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def validate_workdir(workdir):
  """`sora-jax validate`: the validation loss of a run's latest EMA weights, written to
  workdir/validation.json."""
  from sora_jax.files import write_json
  from sora_jax.generate import Pipeline  # here: generate imports the training stack
  from sora_jax.train.dit_stage import dit_training

  pipe = Pipeline.load(workdir)
  examples = validation_set(pipe.config, workdir, pipe.vae, pipe.vae_params)

  denoise = jax.jit(dit_training(pipe.config).denoise)
  report = validation_loss(pipe.config, denoise, pipe.dit_params, examples, pipe.latent_stats)
  write_json(os.path.join(workdir, "validation.json"), report)
  return report
