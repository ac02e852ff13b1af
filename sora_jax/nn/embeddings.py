"""Timestep embeddings, sinusoidal positions and 3D rotary embeddings from (t, h, w)."""
import jax.numpy as jnp
import numpy as np


def sinusoidal(x, dim, max_period=10_000.0):
  """x: float [...] -> [..., dim] (cos | sin halves), the transformer / DiT embedding."""
  half = dim // 2
  freqs = jnp.exp(-np.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = x[..., None].astype(jnp.float32) * freqs
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
  return emb


def timestep_embedding(t, dim):
  """Diffusion time t in [0, 1] -> [..., dim]; scaled by 1000 as in DiT's integer steps."""
  return sinusoidal(t * 1000.0, dim)


def separable_sincos(positions, dim):
  """p_t(t) + p_s(h, w): positions int [..., 3] -> [..., dim].

  The spatial half-and-half split of (h, w) follows ViT's 2D sincos; the temporal table is
  added on top so spatial layers can be reused for images (t = 0 everywhere).
  """
  t, h, w = positions[..., 0], positions[..., 1], positions[..., 2]
  spatial = jnp.concatenate([sinusoidal(h, dim // 2), sinusoidal(w, dim - dim // 2)], axis=-1)
  return spatial + sinusoidal(t, dim)


def rope_split(head_dim):
  """Rotary pairs given to (t, h, w): spatial axes get 3/8 each, time the rest."""
  pairs = head_dim // 2
  spatial = pairs * 3 // 8
  return pairs - 2 * spatial, spatial, spatial


def rope_3d(positions, head_dim, theta=10_000.0):
  """positions int [B, L, 3] -> (cos, sin), each [B, L, head_dim // 2]."""
  angles = []
  for axis, n in enumerate(rope_split(head_dim)):
    freqs = theta ** (-jnp.arange(n, dtype=jnp.float32) / max(n, 1))
    angles.append(positions[..., axis, None].astype(jnp.float32) * freqs)
  angles = jnp.concatenate(angles, axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x, cos, sin):
  """Rotate-half rotary embedding. x: [B, L, H, Dh]; cos/sin: [B, L, Dh // 2]."""
  half = cos.shape[-1]
  x1, x2 = x[..., :half], x[..., half:2 * half]
  cos, sin = cos[:, :, None].astype(x.dtype), sin[:, :, None].astype(x.dtype)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return jnp.concatenate([rotated, x[..., 2 * half:]], axis=-1)
