"""`sora-jax eval-vae`: how well a run's VAE reconstructs held-out real clips.

Each video is streamed through the causal VAE as `encode_chunked` / `decode_chunked` run it (frame
0 alone, then 4 * chunk_latents frames per chunk, the causal caches carried), a chunk at a time
from decoding to metrics: memory holds one chunk of frames whatever the video's length or size.
Per frame it measures PSNR and SSIM (evaluation/pixels.py); the report gives their means, PSNR by
frame index (where the causal first frame and the chunk borders show), and a picture of original /
reconstruction / error from the first video's first chunks (PICTURE_CHUNKS of them, so the picture
too holds a bounded number of frames).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.config import ConfigError
from sora_jax.data.transforms import to_model_range, to_uint8
from sora_jax.evaluation.pixels import psnr, ssim
from sora_jax.models.vae import stream_step

ERROR_GAIN = 4  # the error image is |original - reconstruction| x 4, so small errors show
PICTURE_CHUNKS = 3  # frame 0 and two chunks: the causal first frame and a chunk border in view


@jax.jit
def _frame_metrics(original, recon):
  return psnr(recon, original), ssim(recon, original)


def _cropped(frame, factor):
  """The frame centre-cropped to multiples of the VAE's spatial factor."""
  h, w = (s - s % factor for s in frame.shape[:2])
  if min(h, w) < 16:
    raise ConfigError(f"a {frame.shape[1]}x{frame.shape[0]} video: eval-vae needs 16 pixels a side or more")
  y, x = (frame.shape[0] - h) // 2, (frame.shape[1] - w) // 2
  return frame[y : y + h, x : x + w]


def chunks(frames, first, size):
  """uint8 [n, H, W, 3] arrays of the first `first` frames, then of `size` frames at a time (the
  last one shorter), read from the iterable as they are needed."""
  frames = iter(frames)
  head = list(itertools.islice(frames, first))
  if head:
    yield np.stack(head)
  while piece := list(itertools.islice(frames, size)):
    yield np.stack(piece)


def reconstruct(vae, params, frames, chunk_latents=2):
  """Yield (original, reconstruction) uint8 [n, H, W, 3] chunks of a video streamed through the
  VAE (cropped to multiples of its spatial factor); frames past the last whole group of
  `vae.temporal_factor` are left out."""
  factor, group = vae.spatial_factor, vae.temporal_factor
  size = group * chunk_latents
  encode_cache = decode_cache = {}
  for chunk in chunks((_cropped(f, factor) for f in frames), 1, size):
    n = len(chunk) if len(chunk) == 1 else len(chunk) - len(chunk) % group
    if not n:
      break
    x = jnp.asarray(to_model_range(chunk[:n]))[None]
    if 1 < n < size:  # the last chunk padded with its last frame: one shape, one compilation
      x = jnp.concatenate([x, jnp.repeat(x[:, -1:], size - n, axis=1)], axis=1)
    (mean, _), encode_cache = stream_step(vae, "encode", params, encode_cache, x)
    recon, decode_cache = stream_step(vae, "decode", params, decode_cache, mean)
    yield chunk[:n], to_uint8(np.asarray(recon[0, :n]))


def side_by_side(original, recon, frames=4):
  """uint8 picture: rows original / reconstruction / error x ERROR_GAIN, `frames` frames spread
  over the clip as columns."""
  picks = np.linspace(0, len(original) - 1, min(frames, len(original))).round().astype(int)
  error = np.clip(np.abs(original.astype(np.int16) - recon.astype(np.int16)) * ERROR_GAIN, 0, 255).astype(
      np.uint8
  )
  rows = [np.concatenate(list(v[picks]), axis=1) for v in (original, recon, error)]
  return np.concatenate(rows, axis=0)


def evaluate_vae(vae, params, videos, *, chunk_latents=2, max_videos=None):
  """-> (report, picture) for (name, frames) videos: mean PSNR (dB) and SSIM over all frames,
  their mean by frame index, per video means, and a side_by_side picture of the first video's
  first PICTURE_CHUNKS chunks."""
  by_index, per_video, picture = {}, [], None
  for name, frames in itertools.islice(videos, max_videos):
    scores, kept = [], []
    for original, recon in reconstruct(vae, params, frames, chunk_latents):
      p, s = _frame_metrics(jnp.asarray(to_model_range(original)), jnp.asarray(to_model_range(recon)))
      scores.extend(zip(np.asarray(p).tolist(), np.asarray(s).tolist()))
      if picture is None and len(kept) < PICTURE_CHUNKS:
        kept.append((original, recon))
    if not scores:
      continue
    if picture is None:
      picture = side_by_side(*(np.concatenate(v) for v in zip(*kept)))
    for t, (p, s) in enumerate(scores):
      by_index.setdefault(t, []).append((p, s))
    per_video.append(
        {
            "video": name,
            "frames": len(scores),
            "psnr": float(np.mean([p for p, _ in scores])),
            "ssim": float(np.mean([s for _, s in scores])),
        }
    )
  if not per_video:
    raise ConfigError("eval-vae: no video to evaluate")
  every = [v for values in by_index.values() for v in values]
  report = {
      "videos": len(per_video),
      "frames": len(every),
      "psnr": float(np.mean([p for p, _ in every])),
      "ssim": float(np.mean([s for _, s in every])),
      "psnr_by_frame": [float(np.mean([p for p, _ in by_index[t]])) for t in sorted(by_index)],
      "ssim_by_frame": [float(np.mean([s for _, s in by_index[t]])) for t in sorted(by_index)],
      "chunk_frames": vae.temporal_factor * chunk_latents,
      "per_video": per_video,
  }
  return report, picture
