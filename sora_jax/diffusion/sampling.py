"""The sampler loop over packed rows, with classifier-free guidance."""

import jax
import jax.numpy as jnp

from sora_jax.models.dit import gather_examples


def guided(apply_fn, guidance, segment_ids, positions, cond_mask):
  """apply_fn(x, segment_ids, positions, cond_mask, t, text_ids, text_embeds) -> prediction (the DiT).

  Returns fn(x, t, text, null) with classifier-free guidance, text and null each a
  (text_ids, text_embeds or None) pair (the caption and the empty one); the conditional and
  unconditional passes run as one batch of 2B rows: one compiled call per step. A traced
  guidance (an input of a serving artefact) always runs both."""

  def fn(x, t, text, null):
    if isinstance(guidance, (int, float)) and guidance == 1.0:
      return apply_fn(x, segment_ids, positions, cond_mask, t, *text)
    two = lambda a, b: jax.tree.map(lambda u, v: jnp.concatenate([u, v]), a, b)
    both = apply_fn(
        two(x, x),
        two(segment_ids, segment_ids),
        two(positions, positions),
        two(cond_mask, cond_mask),
        two(t, t),
        *two(text, null),
    )
    cond, uncond = jnp.split(both, 2)
    return uncond + guidance * (cond - uncond)

  return fn


def sample(objective, denoise, noise, times, segment_ids, cond_mask, given, release, text, null):
  """Integrate from noise to data.

  denoise: guided fn (see `guided`, also for text and null); noise/given [B, L, D]; times
  [steps + 1, B, E].
  Conditioning tokens (cond_mask) are held at their given values throughout. Guided tokens
  (release [B, L] < 1: weaker conditions, SDEdit) start as the given values noised to the
  example's first level and are put back there while t >= release, then free: an SDEdit
  example's schedule starts at its release level, so only its start is taken from the source.
  """
  keep = cond_mask[..., None]
  guide = (release < 1.0)[..., None]
  tok = lambda v: gather_examples(v, segment_ids)[..., None]

  def constrain(x, t, guided):
    x = jnp.where(guided, objective.corrupt(given, noise, tok(t)), x)
    return jnp.where(keep, given, x)

  def body(x, t_pair):
    t, t_next = t_pair
    prediction = denoise(x, t, text, null)
    x = objective.step(x, prediction, tok(t), tok(t_next))
    return constrain(x, t_next, guide & (tok(t_next) >= release[..., None])), None

  x, _ = jax.lax.scan(body, constrain(noise, times[0], guide), (times[:-1], times[1:]))
  return x
