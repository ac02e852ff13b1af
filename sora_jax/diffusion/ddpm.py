"""DDPM as in DiT (linear or cosine betas, eps or v prediction), sampled with DDIM.

Times are carried as t = i / num_steps in [0, 1) so the model and the sampler share one
time convention with flow matching; t < 0 marks "past the last step" (alpha_bar = 1).
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


def make_betas(schedule, num_steps):
  if schedule == "linear":
    return np.linspace(1e-4, 0.02, num_steps, dtype=np.float64)
  if schedule == "cosine":  # Nichol & Dhariwal 2021
    f = lambda i: math.cos((i / num_steps + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - f(i + 1) / f(i), 0.999) for i in range(num_steps)])
  raise ValueError(f"unknown beta schedule {schedule!r}; choose linear or cosine")


@dataclasses.dataclass(frozen=True)
class DDPM:
  schedule: str = "linear"
  prediction: str = "eps"  # or "v"
  num_steps: int = 1000

  def __post_init__(self):
    if self.prediction not in ("eps", "v"):
      raise ValueError(f"unknown DDPM prediction {self.prediction!r}; choose eps or v")
    make_betas(self.schedule, self.num_steps)

  def alpha_bar(self, t):
    table = jnp.asarray(np.cumprod(1.0 - make_betas(self.schedule, self.num_steps)), jnp.float32)
    index = jnp.clip(jnp.round(t * self.num_steps).astype(jnp.int32), 0, self.num_steps - 1)
    return jnp.where(t < 0, 1.0, table[index])

  def sample_train_time(self, rng, shape, shift):
    del shift  # DiT's DDPM samples steps uniformly at every resolution
    return jax.random.randint(rng, shape, 0, self.num_steps) / self.num_steps

  def corrupt(self, x0, noise, t):
    ab = self.alpha_bar(t)
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise

  def target(self, x0, noise, t):
    if self.prediction == "eps":
      return noise
    ab = self.alpha_bar(t)
    return jnp.sqrt(ab) * noise - jnp.sqrt(1 - ab) * x0

  def sampling_times(self, steps, shift, start=1.0):
    """DDIM's evenly spaced subsequence from step `start` x (num_steps - 1) (1: pure noise;
    less for SDEdit), last entry -1 (clean)."""
    u = jnp.linspace(1.0, 0.0, steps).reshape((-1,) + (1,) * jnp.ndim(shift))
    index = jnp.round(u * jnp.minimum(start, 1.0) * (self.num_steps - 1))
    t = jnp.broadcast_to(index / self.num_steps, (steps,) + jnp.shape(shift))
    return jnp.concatenate([t, jnp.full((1,) + jnp.shape(shift), -1.0)])

  def step(self, x, prediction, t, t_next):
    """Deterministic DDIM (eta = 0)."""
    ab, ab_next = self.alpha_bar(t), self.alpha_bar(t_next)
    if self.prediction == "eps":
      eps = prediction
      x0 = (x - jnp.sqrt(1 - ab) * eps) / jnp.sqrt(ab)
    else:
      x0 = jnp.sqrt(ab) * x - jnp.sqrt(1 - ab) * prediction
      eps = jnp.sqrt(1 - ab) * x + jnp.sqrt(ab) * prediction
    return jnp.sqrt(ab_next) * x0 + jnp.sqrt(1 - ab_next) * eps
