"""Rectified flow / flow matching: x_t = (1 - t) x0 + t eps, the model predicts v = eps - x0.

t = 0 is data and t = 1 is noise. Training times are logit-normal (SD3) and shifted towards
noise for examples with more tokens, since more tokens average away more of the noise.
"""
import dataclasses

import jax
import jax.numpy as jnp


def time_shift(t, shift):
  """SD3's resolution shift: t' = s t / (1 + (s - 1) t); s > 1 moves mass towards noise."""
  return shift * t / (1.0 + (shift - 1.0) * t)


@dataclasses.dataclass(frozen=True)
class FlowMatching:
  time_sampling: str = "logit_normal"  # or "uniform"
  logit_mean: float = 0.0
  logit_std: float = 1.0

  def sample_train_time(self, rng, shape, shift):
    if self.time_sampling == "logit_normal":
      u = jax.nn.sigmoid(self.logit_mean + self.logit_std * jax.random.normal(rng, shape))
    else:
      u = jax.random.uniform(rng, shape)
    return time_shift(u, shift)

  def corrupt(self, x0, noise, t):
    return (1.0 - t) * x0 + t * noise

  def target(self, x0, noise, t):
    del t
    return noise - x0

  def sampling_times(self, steps, shift, start=1.0):
    """[steps + 1, *shift.shape] from `start` (1: noise; less for SDEdit) to 0 (data): the
    shifted schedule's own spacing, over [0, start]."""
    u = jnp.linspace(1.0, 0.0, steps + 1).reshape((-1,) + (1,) * jnp.ndim(shift))
    # The unshifted level whose shifted value is `start` (exactly 1 for a full schedule).
    u_start = jnp.where(start >= 1.0, 1.0, start / (shift - (shift - 1.0) * start))
    return time_shift(u * u_start, shift)

  def step(self, x, prediction, t, t_next):
    """Euler step of dx/dt = v."""
    return x + (t_next - t) * prediction
