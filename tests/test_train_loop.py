"""The train loop: non-finite steps are skipped and counted; a streak stops the run."""
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sora_jax.data.stream import StepBatches
from sora_jax.train.checkpoint import Checkpointer
from sora_jax.train.loop import Preempted, TrainingDiverged, fit
from sora_jax.train.state import create_state, make_optimizer, make_train_step

BAD_STEPS = {3, 4}


def quadratic_step():
  """Fits w to 1; the batch says whether to poison the loss with NaN."""
  def loss_fn(params, batch, rng):
    loss = jnp.sum(jnp.square(params["w"] - 1.0))
    return jnp.where(batch["bad"], jnp.nan, loss), {}
  tx = optax.sgd(0.1)
  return make_train_step(loss_fn, tx, lambda step: 0.1, ema_decay=0.5), tx


def test_nonfinite_steps_leave_the_state_and_count(tmp_path):
  step_fn, tx = quadratic_step()
  state = create_state({"w": jnp.zeros(3)}, tx)
  trajectory = []
  for i in range(6):
    state, metrics = jax.jit(step_fn)(state, {"bad": jnp.asarray(i in BAD_STEPS)}, jax.random.key(0))
    trajectory.append(np.asarray(state.params["w"]))
  np.testing.assert_array_equal(trajectory[2], trajectory[3])   # skipped: params unchanged
  np.testing.assert_array_equal(trajectory[3], trajectory[4])
  assert not np.array_equal(trajectory[4], trajectory[5])      # and training goes on
  assert int(state.step) == 6 and int(state.skipped) == 2 and int(state.skipped_in_row) == 0
  assert int(metrics["skipped_steps"]) == 2 and np.isfinite(np.asarray(state.ema_params["w"])).all()


def test_a_streak_of_nonfinite_steps_stops_with_the_good_checkpoint(tmp_path):
  step_fn, tx = quadratic_step()
  state = create_state({"w": jnp.zeros(3)}, tx)
  batch_at = lambda step: ({"bad": np.asarray(step >= 4)}, {})
  with pytest.raises(TrainingDiverged, match="non-finite steps in a row at step 8; the last good checkpoint is step 4"):
    fit("q", workdir=str(tmp_path), state=state, train_step=jax.jit(step_fn), data=StepBatches(batch_at),
        num_steps=20, seed=0, log_every=2, checkpoint_every=4, max_nonfinite_in_row=3)
  ckpt = Checkpointer(tmp_path / "checkpoints" / "q")
  saved = ckpt.restore_saved()
  ckpt.close()
  assert np.isfinite(saved["params"]["w"]).all() and int(saved["skipped"]) == 0


def run_quadratic(workdir, num_steps, sigterm_at=None):
  """fit() on the quadratic problem; the batch of step `sigterm_at` sends this process SIGTERM."""
  step_fn, tx = quadratic_step()
  losses = {}

  def batch_at(step):
    if step == sigterm_at:
      os.kill(os.getpid(), signal.SIGTERM)
    return {"bad": np.asarray(False)}, {}

  def recording_step(state, batch, rng):
    state, metrics = jax.jit(step_fn)(state, batch, rng)
    losses[int(state.step)] = float(metrics["loss"])
    return state, metrics
  state = fit("q", workdir=str(workdir), state=create_state({"w": jnp.zeros(3)}, tx),
              train_step=recording_step, data=StepBatches(batch_at), num_steps=num_steps, seed=0, log_every=1,
              checkpoint_every=100)
  return state, losses


def test_sigterm_saves_and_the_resumed_run_matches_an_uninterrupted_one(tmp_path):
  straight, straight_losses = run_quadratic(tmp_path / "a", 8)
  with pytest.raises(Preempted, match="stopped by SIGTERM at step 4, checkpoint saved"):
    run_quadratic(tmp_path / "b", 8, sigterm_at=3)
  ckpt = Checkpointer(tmp_path / "b" / "checkpoints" / "q")
  assert ckpt.latest_step() == 4
  ckpt.close()
  resumed, resumed_losses = run_quadratic(tmp_path / "b", 8)
  assert sorted(resumed_losses) == [5, 6, 7, 8]
  assert all(resumed_losses[s] == straight_losses[s] for s in resumed_losses)
  for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
    np.testing.assert_array_equal(got, want)


def test_weight_decay_touches_matrices_only():
  tx, _ = make_optimizer(lr=0.1, warmup=1, total_steps=10, weight_decay=0.5)
  params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "norm": {"scale": jnp.ones(2)}}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update(zero_grads, state, params)
    params = optax.apply_updates(params, updates)
  assert float(params["dense"]["kernel"][0, 0]) < 1.0
  assert float(params["dense"]["bias"][0]) == 1.0 and float(params["norm"]["scale"][0]) == 1.0


def test_gradient_accumulation_equals_one_big_batch():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=(8,)).astype(np.float32)
  loss_fn = lambda p, b, r: (jnp.mean(jnp.square(b["x"] @ p["w"] - b["y"])), {})

  def train(accumulate, batches):
    tx, schedule = make_optimizer(lr=0.05, warmup=1, total_steps=8, schedule="constant", accumulate=accumulate)
    step = jax.jit(make_train_step(loss_fn, tx, schedule, ema_decay=0.5))
    state = create_state({"w": jnp.zeros(3)}, tx)
    for b in batches:
      state, _ = step(state, b, jax.random.key(0))
    return state

  halves = [{"x": x[:4], "y": y[:4]}, {"x": x[4:], "y": y[4:]}] * 2
  wholes = [{"x": x, "y": y}] * 2
  accumulated, big = train(2, halves), train(1, wholes)
  np.testing.assert_allclose(accumulated.params["w"], big.params["w"], rtol=1e-5)
  np.testing.assert_allclose(accumulated.ema_params["w"], big.ema_params["w"], rtol=1e-5)


def run_worker(workdir, num_steps, pause, kill_after=None):
  """Runs tests/kill_worker.py; with kill_after, SIGKILLs it once it has printed that step."""
  command = [sys.executable, os.path.join(os.path.dirname(__file__), "kill_worker.py"), str(workdir),
             str(num_steps), str(pause)]
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(__file__)),
                                                      os.path.dirname(__file__)])}
  proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  for line in proc.stdout:
    if kill_after is not None and line.strip() == f"step {kill_after}":
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return
  assert proc.wait() == 0


def test_runs_killed_at_any_moment_resume_to_the_uninterrupted_result(tmp_path):
  run_worker(tmp_path / "straight", 16, 0.0)
  for kill_after in (3, 7, 12):  # killed three times, in and around asynchronous saves
    run_worker(tmp_path / "killed", 16, 0.02, kill_after=kill_after)
    ckpt = Checkpointer(tmp_path / "killed" / "checkpoints" / "kill")
    assert 1 <= ckpt.latest_step() <= kill_after  # the last step whose save completed
    ckpt.close()
  run_worker(tmp_path / "killed", 16, 0.0)
  np.testing.assert_array_equal(np.load(tmp_path / "killed" / "final.npy"),
                                np.load(tmp_path / "straight" / "final.npy"))
