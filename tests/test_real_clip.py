"""The real h264 clip in tests/data decodes and round-trips the VAE path."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from configs.shapes import get_config
from sora_jax.data.transforms import center_crop_to_multiple, downscale, to_model_range, to_uint8
from sora_jax.data.video_io import read_video
from sora_jax.models.build import build_vae
from sora_jax.models.vae import decode_chunked, encode_chunked

CLIP = Path(__file__).resolve().parent / "data" / "mmcv_test.mp4"  # licence: tests/data/README.md


def test_real_clip_round_trips_through_vae_at_non_square_size():
  video = read_video(CLIP)
  assert video.shape == (168, 240, 294, 3)
  clip = center_crop_to_multiple(video[:17], 16)  # 240 x 288: non-square, divisible by 8 x 2
  clip = downscale(clip.astype(np.float32), 2)    # 120 x 144 keeps the test fast
  assert clip.shape == (17, 120, 144, 3)
  vae = build_vae(get_config("tiny").vae)
  x = jnp.asarray(to_model_range(clip)[None])
  params = vae.init(jax.random.key(0), x[:, :1])["params"]
  mean, logvar = encode_chunked(vae, params, x, chunk_latents=2)
  assert mean.shape == (1, 5, 15, 18, 4) and logvar.shape == mean.shape
  recon = decode_chunked(vae, params, mean, chunk_latents=2)
  assert recon.shape == x.shape and bool(jnp.all(jnp.isfinite(recon)))
  assert to_uint8(np.asarray(recon[0])).shape == (17, 120, 144, 3)
