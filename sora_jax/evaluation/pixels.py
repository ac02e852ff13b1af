"""Per-frame PSNR and SSIM of videos in [-1, 1]: one definition for the VAE's SSIM loss and for
`sora-jax eval-vae`.

SSIM is Wang et al. (2004) as scikit-image and most video-VAE papers compute it: an 11x11
Gaussian window (sigma 1.5) over each channel, the constants K1 = 0.01 and K2 = 0.03 of a data
range of 1 (frames are mapped to [0, 1] first), averaged over the valid (unpadded) positions and
the channels. PSNR is over [0, 1] pixels too, 10 log10(1 / MSE).
"""

import jax
import jax.numpy as jnp
import numpy as np

WINDOW, SIGMA = 11, 1.5
C1, C2 = 0.01**2, 0.03**2


def _gaussian_blur(x):
  """Valid 11x11 Gaussian filtering of [N, H, W, C], separably (two 1-D passes per channel)."""
  taps = np.exp(-0.5 * ((np.arange(WINDOW) - WINDOW // 2) / SIGMA) ** 2)
  taps = jnp.asarray(taps / taps.sum(), x.dtype)
  channels = x.shape[-1]
  for kernel in (taps.reshape(WINDOW, 1, 1, 1), taps.reshape(1, WINDOW, 1, 1)):
    x = jax.lax.conv_general_dilated(
        x,
        jnp.tile(kernel, (1, 1, 1, channels)),
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels,
    )
  return x


def ssim(a, b):
  """SSIM of each frame: a, b float [..., H, W, C] in [-1, 1] (H, W >= 11) -> [...]."""
  lead = a.shape[:-3]
  a, b = ((jnp.reshape(v, (-1, *v.shape[-3:])).astype(jnp.float32) + 1) / 2 for v in (a, b))
  mu_a, mu_b = _gaussian_blur(a), _gaussian_blur(b)
  var_a = _gaussian_blur(a * a) - mu_a**2
  var_b = _gaussian_blur(b * b) - mu_b**2
  cov = _gaussian_blur(a * b) - mu_a * mu_b
  index = ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2))
  return jnp.reshape(index.mean(axis=(1, 2, 3)), lead)


def psnr(a, b):
  """PSNR in dB of each frame: a, b float [..., H, W, C] in [-1, 1] -> [...] (inf where equal)."""
  mse = jnp.mean(((a.astype(jnp.float32) - b.astype(jnp.float32)) / 2) ** 2, axis=(-3, -2, -1))
  return 10 * jnp.log10(1.0 / mse)
