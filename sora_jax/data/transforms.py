"""Pixel range conversions between stored uint8 video and the model's [-1, 1]."""
import numpy as np


def to_model_range(video):
  return np.asarray(video, np.float32) / 127.5 - 1.0


def to_uint8(video):
  return np.clip((np.asarray(video, np.float32) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def center_crop_to_multiple(video, multiple):
  """Crop [T, H, W, C] centrally so H and W are multiples of `multiple` (VAE x patch stride)."""
  h, w = video.shape[1] // multiple * multiple, video.shape[2] // multiple * multiple
  if h == 0 or w == 0:
    raise ValueError(f"video of size {video.shape[1]}x{video.shape[2]} is smaller than the stride {multiple}")
  y, x = (video.shape[1] - h) // 2, (video.shape[2] - w) // 2
  return video[:, y:y + h, x:x + w]


def downscale(video, factor):
  """Integer box downscale of [T, H, W, C] (H, W divisible by factor)."""
  t, h, w, c = video.shape
  return video.reshape(t, h // factor, factor, w // factor, factor, c).mean((2, 4))
