"""Pixel range conversions between stored uint8 video and the model's [-1, 1]."""
import numpy as np


def to_model_range(video):
  return np.asarray(video, np.float32) / 127.5 - 1.0


def to_uint8(video):
  return np.clip((np.asarray(video, np.float32) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
