"""Train state and optimizer."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  ema_params: Any  # exponential moving average of params, used for sampling
  opt_state: Any
  skipped: jax.Array  # updates skipped for a non-finite loss or gradient, in total
  skipped_in_row: jax.Array  # ... since the last applied update


def decay_mask(params):
  """Weight decay on matrices (kernels, embeddings) only, not on biases and norm scales."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) in ("kernel", "embedding"), params
  )


def make_optimizer(
    *,
    lr,
    warmup,
    total_steps,
    weight_decay=0.0,
    grad_clip=1.0,
    schedule="cosine",
    accumulate=1,
    eps=1e-8,
    scale_updates=None,
):
  """AdamW (decay masked to matrices), linear warmup then cosine decay to 10 % of lr or constant,
  global-norm clipping; with `accumulate` > 1, gradients of that many steps make one update
  (steps, and the schedule, then count micro-batches). scale_updates: a transformation applied
  last (muP's per-parameter learning-rate multipliers, scaling/mup.py)."""
  if schedule == "cosine":
    lr_at = optax.warmup_cosine_decay_schedule(
        0.0, lr, max(warmup, 1), max(total_steps, warmup + 1), end_value=0.1 * lr
    )
  elif schedule == "constant":
    lr_at = optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.constant_schedule(lr)], [max(warmup, 1)]
    )
  else:
    raise ValueError(f"unknown schedule {schedule!r}; choose cosine or constant")
  inner = lambda step: lr_at(step * accumulate)  # the optimizer counts updates, the run counts steps
  tx = optax.chain(
      optax.clip_by_global_norm(grad_clip),
      optax.adamw(inner, b2=0.99, eps=eps, weight_decay=weight_decay, mask=decay_mask),
      *([scale_updates] if scale_updates is not None else []),
  )
  if accumulate > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accumulate)
  return tx, lr_at


def make_train_step(loss_fn, tx, schedule, ema_decay):
  """loss_fn(params, batch, rng, *frozen) -> (loss, metrics)  =>  step(state, batch, rng, *frozen)
  -> (state, metrics). `frozen`: arguments the loss reads but never trains (a fine-tune's base
  weights), passed to every step rather than closed over, so they are not baked into the program."""

  def train_step(state, batch, rng, *frozen):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng, *frozen)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # A non-finite step leaves params, EMA and optimizer as they were; the data moves on.
    updated = apply_gradients(state, grads, tx, ema_decay)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
    new_state = new_state.replace(
        step=state.step + 1,
        skipped=state.skipped + (~finite).astype(jnp.int32),
        skipped_in_row=jnp.where(finite, 0, state.skipped_in_row + 1),
    )
    return new_state, {
        **metrics,
        "loss": loss,
        "lr": schedule(state.step),
        "grad_norm": grad_norm,
        "skipped_steps": new_state.skipped,
    }

  return train_step


def create_state(params, tx):
  # Every leaf its own buffer (the EMA a copy, a fresh zero per counter): the step donates the
  # state, and one buffer donated twice crashes.
  zero = lambda: jnp.zeros((), jnp.int32)
  return TrainState(
      step=zero(),
      params=params,
      ema_params=jax.tree.map(jnp.copy, params),
      opt_state=tx.init(params),
      skipped=zero(),
      skipped_in_row=zero(),
  )


def apply_gradients(state, grads, tx, ema_decay):
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if isinstance(tx, optax.MultiSteps):  # the EMA follows real updates, not micro-batches
    ema_decay = jnp.where(tx.has_updated(opt_state), ema_decay, 1.0)
  ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, state.ema_params, params)
  return state.replace(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state)
