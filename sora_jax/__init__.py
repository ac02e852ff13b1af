"""sora_jax: Sora-style video diffusion in JAX/Flax."""

__version__ = "0.1.0"
