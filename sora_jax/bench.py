"""`sora-jax bench`: time the DiT train step and one sampling evaluation for a config.

Rows are filled with examples of the config's `aot.example_grid` (random latents, a real
caption), packed as in training. Reports step time, real tokens/s, analytic model FLOPs, MFU
against a per-device peak, and peak device memory where the platform reports it.
"""

import time

import jax
import numpy as np

from sora_jax.data.packing import first_fit, pack, padding_fraction
from sora_jax.models.build import caption_ids, frozen_encoder, patch_dim, with_text_embeds
from sora_jax.models.patch import grid_positions
from sora_jax.parallel.mesh import check_divisibility, make_mesh
from sora_jax.parallel.sharding import (
    MeshFunction,
    batch_sharding,
    global_batch,
    init_sharded,
    sharded_train_step,
)
from sora_jax.train.dit_stage import dit_training
from sora_jax.train.flops import PEAK_FLOPS, dit_forward_flops, dit_train_flops


def packed_bench_batch(config, seed=0):
  """Host rows (this process's share) full of `aot.example_grid` examples."""
  t = config.train
  rows = t.rows // jax.process_count()
  grid = tuple(config.aot.example_grid)
  n = int(np.prod(grid))
  rng = np.random.default_rng(seed)
  text = caption_ids(config, ["a red circle moves to the right quickly on a plain background"])[0]
  count = rows * examples_per_row(config)
  examples = [
      {
          "tokens": rng.normal(size=(n, patch_dim(config))).astype(np.float32),
          "positions": grid_positions(grid),
          "grid": np.array(grid, np.int32),
          "text_ids": text,
      }
      for _ in range(count)
  ]
  places = first_fit([n] * count, rows=rows, row_length=t.row_length, max_per_row=t.max_per_row)
  return pack(examples, places, rows=rows, row_length=t.row_length, max_per_row=t.max_per_row)


def examples_per_row(config):
  t = config.train
  return min(t.max_per_row, max(1, t.row_length // int(np.prod(config.aot.example_grid))))


def unpacked_config(config):
  """The same examples one per row, each row exactly one example long: the baseline that
  packed rows are measured against (same useful tokens, no masking, no padding)."""
  unpacked = config.copy_and_resolve_references()
  unpacked.train.rows = config.train.rows * examples_per_row(config)
  unpacked.train.row_length = int(np.prod(config.aot.example_grid))
  unpacked.train.max_per_row = 1
  return unpacked


def _time(fn, args, steps, warmup):
  """Seconds per call after warm-up; a step's new state feeds the next (it donates the old)."""
  for _ in range(warmup):
    out = fn(*args)
    args = (out[0],) + args[1:] if isinstance(out, tuple) else args
  jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(steps):
    out = fn(*args)
    args = (out[0],) + args[1:] if isinstance(out, tuple) else args
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps, args[0]


def _peak_memory():
  stats = [d.memory_stats() or {} for d in jax.local_devices()]
  peaks = [s.get("peak_bytes_in_use") for s in stats if s.get("peak_bytes_in_use") is not None]
  return max(peaks) / 2**30 if peaks else None


def run_bench(config, steps=10, warmup=2, peak_flops=None, unpacked=False):
  """Timings of `config`; with `unpacked`, also of the unpacked baseline and the ratio of
  real tokens/s (packed / unpacked)."""
  report = _bench(config, steps, warmup, peak_flops)
  if unpacked:
    base = _bench(unpacked_config(config), steps, warmup, peak_flops)
    report["unpacked"] = base
    report["packed_vs_unpacked_train_tokens_per_second"] = (
        report["train_tokens_per_second"] / base["train_tokens_per_second"]
    )
  return report


def _bench(config, steps, warmup, peak_flops):
  mesh = make_mesh(config.mesh)
  check_divisibility(config, mesh)
  training = dit_training(config)
  state, state_sharding = init_sharded(training.init_state, jax.random.key(0), mesh)
  shardings = batch_sharding(training.batch_shapes, mesh)
  local = packed_bench_batch(config, seed=jax.process_index())
  ids_batch = global_batch(local, shardings, config.train.rows)
  frozen = frozen_encoder(config)
  if frozen is not None:
    frozen.on_mesh(mesh)
  # With a frozen encoder the timed step reads cached embeddings (computed once here); the
  # step that encodes its captions first is timed below.
  batch = with_text_embeds(config, ids_batch, shardings)
  rng = jax.random.key(1)
  train_step = sharded_train_step(training.train_step, mesh, state_sharding, shardings)
  step_time, state = _time(train_step, (state, batch, rng), steps, warmup)
  encoding = {}
  if frozen is not None:
    encode_and_step = lambda state, b, rng: train_step(state, with_text_embeds(config, b, shardings), rng)
    seconds, state = _time(encode_and_step, (state, ids_batch, rng), steps, warmup)
    encoding = {"text_encoder": frozen.path, "train_step_seconds_encoding_text": seconds}

  denoise = lambda params, batch: training.denoise(
      params, batch, jax.numpy.full(batch["grid"].shape[:2], 0.5)
  )
  sample_time, _ = _time(MeshFunction(denoise, mesh), (state.ema_params, batch), steps, warmup)

  devices = jax.device_count()
  kind = jax.devices()[0].device_kind
  peak = peak_flops or PEAK_FLOPS.get(kind)
  # Every host packs the same layout, so the global FLOPs are this host's times the host count.
  grids, hosts = local["grid"].reshape(-1, 3), jax.process_count()
  pd, lt = patch_dim(config), config.model.text.max_len
  train_flops = dit_train_flops(config.model, pd, lt, grids) * hosts
  sample_flops = dit_forward_flops(config.model, pd, lt, grids) * hosts
  tokens = int((local["segment_ids"] > 0).sum()) * hosts
  mfu = lambda flops, seconds: flops / (seconds * peak * devices) if peak else None
  return {
      "device": kind,
      "devices": devices,
      "mesh": dict(zip(mesh.axis_names, map(int, mesh.devices.shape))),
      "rows": config.train.rows,
      "row_length": config.train.row_length,
      "example_grid": list(config.aot.example_grid),
      "padding_fraction": padding_fraction(local),
      "train_step_seconds": step_time,
      "train_tokens_per_second": tokens / step_time,
      "train_model_flops": train_flops,
      "train_mfu": mfu(train_flops, step_time),
      "sample_step_seconds": sample_time,
      "sample_tokens_per_second": tokens / sample_time,
      "sample_mfu": mfu(sample_flops, sample_time),
      "peak_flops_per_device": peak,
      "peak_memory_gib": _peak_memory(),
      **encoding,
  }
