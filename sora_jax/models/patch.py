"""Spacetime patches: latents [T, H, W, C] <-> tokens [N, pt*ph*pw*C] with (t, h, w) coordinates.

Works on numpy (data pipeline) and jax arrays (sampler) alike: only reshape/transpose.
"""
import numpy as np


def patch_grid(latent_shape, patch):
  """(T, H, W) latent extent -> (T/pt, H/ph, W/pw); raises if a stride does not divide."""
  grid = []
  for name, size, p in zip(("frames", "height", "width"), latent_shape, patch):
    if size % p:
      raise ValueError(f"latent {name} {size} is not divisible by the patch size {p}")
    grid.append(size // p)
  return tuple(grid)


def grid_positions(grid):
  """(Tp, Hp, Wp) -> int32 [Tp*Hp*Wp, 3] coordinates in token order."""
  return np.indices(grid, dtype=np.int32).reshape(3, -1).T


def patchify(latent, patch):
  """latent [T, H, W, C] -> tokens [N, pt*ph*pw*C] in (t, h, w) raster order."""
  (t, h, w), (pt, ph, pw) = patch_grid(latent.shape[:3], patch), patch
  c = latent.shape[-1]
  x = latent.reshape(t, pt, h, ph, w, pw, c).transpose(0, 2, 4, 1, 3, 5, 6)
  return x.reshape(t * h * w, pt * ph * pw * c)


def unpatchify(tokens, grid, patch, channels):
  """tokens [N, pt*ph*pw*C] -> latent [T, H, W, C]; inverse of patchify."""
  (t, h, w), (pt, ph, pw) = grid, patch
  x = tokens.reshape(t, h, w, pt, ph, pw, channels).transpose(0, 3, 1, 4, 2, 5, 6)
  return x.reshape(t * pt, h * ph, w * pw, channels)
