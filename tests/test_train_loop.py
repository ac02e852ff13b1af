"""The train loop: non-finite steps are skipped and counted; a streak stops the run."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sora_jax.train.checkpoint import Checkpointer
from sora_jax.train.loop import TrainingDiverged, fit
from sora_jax.train.state import create_state, make_train_step

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
    fit("q", workdir=str(tmp_path), state=state, train_step=jax.jit(step_fn), batch_at=batch_at,
        num_steps=20, seed=0, log_every=2, checkpoint_every=4, max_nonfinite_in_row=3)
  ckpt = Checkpointer(tmp_path / "checkpoints" / "q")
  saved = ckpt.restore_saved()
  ckpt.close()
  assert np.isfinite(saved["params"]["w"]).all() and int(saved["skipped"]) == 0
