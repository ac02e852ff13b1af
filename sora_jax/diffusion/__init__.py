"""Diffusion objectives (flow matching, DDPM), timestep shifts and the guided sampler."""
import jax.numpy as jnp

from sora_jax.diffusion.ddpm import DDPM
from sora_jax.diffusion.flow import FlowMatching

OBJECTIVES = ("flow", "ddpm")


def make_objective(cfg):
  """cfg: the `diffusion` ConfigDict."""
  if cfg.objective == "flow":
    return FlowMatching(cfg.time_sampling, cfg.logit_mean, cfg.logit_std)
  if cfg.objective == "ddpm":
    return DDPM(cfg.beta_schedule, cfg.prediction)
  raise ValueError(f"diffusion.objective={cfg.objective!r}; choose from {OBJECTIVES}")


def resolution_shift(num_tokens, base_tokens):
  """Per-example shift sqrt(n / base): grows with token count (1 for empty slots)."""
  return jnp.where(num_tokens > 0, jnp.sqrt(jnp.maximum(num_tokens, 1) / base_tokens), 1.0)
