"""A run for the SIGKILL test: fits w to the packed batches of the test stream, checkpointing
every step (2 batches prefetched, as training does), and prints each finished step; at the end
writes WORKDIR/final.npy.

usage: python tests/kill_worker.py WORKDIR NUM_STEPS SECONDS_PER_STEP
"""
import os
import sys
import time

os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from sora_jax.data.stream import PackedBatches  # noqa: E402
from sora_jax.train.loop import fit  # noqa: E402
from sora_jax.train.state import create_state, make_train_step  # noqa: E402
from test_stream import stream_of  # noqa: E402

workdir, num_steps, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])


def loss_fn(params, batch, rng):
  # The target is the mean stream position in the batch: the result depends on every batch.
  real = batch["segment_ids"] > 0
  target = jnp.sum(batch["tokens"][..., 0] * real) / jnp.sum(real) / 100.0
  return jnp.sum(jnp.square(params["w"] - target - jax.random.normal(rng, (3,)))), {}


tx = optax.adam(0.05)
step_fn = jax.jit(make_train_step(loss_fn, tx, lambda step: 0.05, ema_decay=0.9))


def report(step, state, writer):
  time.sleep(pause)
  print(f"step {step}", flush=True)


state = fit("kill", workdir=workdir, state=create_state({"w": jnp.zeros(3)}, tx), train_step=step_fn,
            data=PackedBatches(stream_of(), rows=2, row_length=128, max_per_row=8), num_steps=num_steps,
            seed=0, log_every=1, checkpoint_every=1, hooks=[report], prefetch=2)  # as training runs
np.save(os.path.join(workdir, "final.npy"), np.asarray(state.params["w"]))
