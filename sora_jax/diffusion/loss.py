"""The diffusion training loss on a packed batch, for any objective."""

import jax
import jax.numpy as jnp

from sora_jax.diffusion import resolution_shift
from sora_jax.models.build import condition_inputs
from sora_jax.models.dit import gather_examples


def diffusion_loss(apply_fn, objective, batch, rng, *, shift_base_tokens):
  """Noise each example at its own time, predict, MSE over real non-conditioning tokens.

  apply_fn(xt, segment_ids, positions, cond_mask, timesteps, text_ids, text_embeds, motion) ->
  prediction (text_embeds None unless a frozen encoder's output rides in the batch; motion None
  unless a Tora adapter's motion tokens do).
  """
  rng_t, rng_n = jax.random.split(rng)
  x0, seg, cond = batch["tokens"], batch["segment_ids"], batch["cond_mask"]
  shift = resolution_shift(jnp.prod(batch["grid"], axis=-1), shift_base_tokens)
  t = objective.sample_train_time(rng_t, shift.shape, shift)
  t_tok = gather_examples(t, seg)[..., None]
  noise = jax.random.normal(rng_n, x0.shape, x0.dtype)
  xt = jnp.where(cond[..., None], x0, objective.corrupt(x0, noise, t_tok))
  pred = apply_fn(xt, seg, batch["positions"], cond, t, *condition_inputs(batch))
  err = jnp.square(pred - objective.target(x0, noise, t_tok)).mean(-1)
  mask = batch["loss_mask"]
  return (err * mask).sum() / jnp.maximum(mask.sum(), 1.0)
