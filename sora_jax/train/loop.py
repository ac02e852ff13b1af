"""The generic train loop shared by every stage: resume, step, log, checkpoint."""

import os
import signal
import threading
import time

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils
from tensorboardX import SummaryWriter

from sora_jax.train.checkpoint import Checkpointer
from sora_jax.train.flops import PEAK_FLOPS


class TrainingDiverged(RuntimeError):
  """Too many non-finite steps in a row; the checkpoints on disk are from before the streak."""


class Preempted(RuntimeError):
  """SIGTERM arrived: a checkpoint of the current step was saved; rerun the command to resume."""


class _StopFlag:
  """Set by SIGTERM; with several hosts, all agree (at log steps) so they save the same step."""

  def __init__(self):
    self.raised = False
    self.previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    self.raised = True

  def __exit__(self, *exc):
    if self.previous is not None:
      signal.signal(signal.SIGTERM, self.previous)

  def should_stop(self, logging):
    if jax.process_count() == 1:
      return self.raised
    if not logging:  # a collective per step would cost a sync; agree at log steps only
      return False
    return bool(multihost_utils.process_allgather(np.asarray(self.raised)).any())


# Host metrics summed between logs and logged as rates: these keys -> "<key>_per_sec".
RATE_KEYS = ("tokens", "examples", "model_flops")


def fit(
    name,
    *,
    workdir,
    state,
    train_step,
    data,
    num_steps,
    seed,
    log_every,
    checkpoint_every,
    put_batch=None,
    config=None,
    max_nonfinite_in_row=20,
    peak_flops=None,
    keep_checkpoints=2,
    keep_period=None,
    keep_steps=(),
    hooks=(),
    prefetch=0,
):
  """Run `train_step` from the last checkpoint of stage `name` up to `num_steps`.

  data: a grain iterator of (host batch, host_metrics) (data/stream.py); its state is saved with
  each checkpoint, so a resumed run sees exactly the batches an uninterrupted one would.
  put_batch(host batch) -> the global device batch. train_step(state, batch, rng) -> (state, metrics).
  config (a dict) is saved with each checkpoint.
  Non-finite steps are skipped inside train_step; a streak of `max_nonfinite_in_row` stops the run
  (checked when logging and before each checkpoint, which a skipped step leaves unchanged anyway).
  Host metrics named in RATE_KEYS (this host's share) become global per-second rates, and model
  FLOPs become MFU against `peak_flops` per device (default: known device kinds).
  hooks: callables hook(step, state, writer) run after every step (writer is None off host 0).
  prefetch: batches made ahead in a background thread (grain's ThreadPrefetchDatasetIterator,
  whose state is the consumed position, so checkpoints and resume are unchanged) while the
  device runs the step; the `input_wait` metric is the share of wall time spent waiting for data.
  """
  peak_flops = peak_flops or PEAK_FLOPS.get(jax.devices()[0].device_kind)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints", name), keep_checkpoints, keep_period, keep_steps)
  restored = ckpt.restore(state, data)
  state = state if restored is None else restored
  if prefetch:
    import grain

    data = grain.experimental.ThreadPrefetchDatasetIterator(data, prefetch)
  start = int(state.step)
  if start >= num_steps:
    ckpt.close()
    return state
  lead = jax.process_index() == 0  # one host writes events and shows progress
  writer = SummaryWriter(os.path.join(workdir, "tensorboard", name)) if lead else None
  key = jax.random.key(seed)
  bar = tqdm.tqdm(
      total=num_steps, initial=start, desc=name, unit="step", dynamic_ncols=True, disable=not lead
  )
  try:
    with _StopFlag() as stop:
      return _run(
          name,
          ckpt,
          config,
          writer,
          bar,
          stop,
          state,
          train_step,
          data,
          put_batch or (lambda b: b),
          start,
          num_steps,
          key,
          log_every,
          checkpoint_every,
          max_nonfinite_in_row,
          peak_flops,
          hooks,
          frozenset(keep_steps),
      )
  finally:  # also on TrainingDiverged / Preempted: waits for the last checkpoint to be complete
    if prefetch:
      data.close()  # stops the prefetch thread
    bar.close()
    if writer:
      writer.close()
    ckpt.close()


def _run(
    name,
    ckpt,
    config,
    writer,
    bar,
    stop,
    state,
    train_step,
    data,
    put_batch,
    start,
    num_steps,
    key,
    log_every,
    checkpoint_every,
    max_nonfinite_in_row,
    peak_flops,
    hooks,
    keep_steps,
):
  last_time, last_step = time.perf_counter(), start
  sums = dict.fromkeys(RATE_KEYS, 0.0)
  waited = 0.0  # seconds this host waited for its batches since the last log
  for step in range(start, num_steps):
    asked = time.perf_counter()
    batch, host_metrics = next(data)
    waited += time.perf_counter() - asked
    batch, host_metrics = put_batch(batch), dict(host_metrics)
    for k in RATE_KEYS:
      sums[k] += host_metrics.pop(k, 0.0) * jax.process_count()
    state, metrics = train_step(state, batch, jax.random.fold_in(key, step))
    done = step + 1
    logging = done % log_every == 0 or done == num_steps
    saving = done % checkpoint_every == 0 or done == num_steps or done in keep_steps
    if (logging or saving) and int(state.skipped_in_row) >= max_nonfinite_in_row:
      raise TrainingDiverged(
          f"{name}: {int(state.skipped_in_row)} non-finite steps in a row at step {done}; "
          f"the last good checkpoint is step {ckpt.latest_step()}"
      )
    if logging:
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      now = time.perf_counter()
      elapsed = now - last_time
      metrics["steps_per_sec"] = (done - last_step) / elapsed
      metrics["input_wait"] = waited / elapsed
      waited = 0.0
      metrics.update({f"{k}_per_sec": v / elapsed for k, v in sums.items() if v})
      if peak_flops and sums["model_flops"]:
        metrics["mfu"] = sums["model_flops"] / elapsed / (peak_flops * jax.device_count())
      last_time, last_step, sums = now, done, dict.fromkeys(RATE_KEYS, 0.0)
      for k, v in {**metrics, **host_metrics}.items():
        if writer:
          writer.add_scalar(f"{name}/{k}", v, done)
      bar.set_postfix(loss=f"{metrics['loss']:.4f}", steps_per_sec=f"{metrics['steps_per_sec']:.2f}")
    bar.update(1)
    for hook in hooks:
      hook(done, state, writer)
    preempted = stop.should_stop(logging)
    if saving or preempted:
      ckpt.save(done, state, data, config)
    if preempted:
      raise Preempted(
          f"{name}: stopped by SIGTERM at step {done}, checkpoint saved; " "run the same command to resume"
      )
  return state


def host_rng(seed, stream, step, *more):
  """numpy Generator for the data of one step (and shard): independent of the steps before."""
  return np.random.default_rng([seed, stream, step, *more])
