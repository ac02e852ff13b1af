"""The sampling memory estimate, and the one-line refusal when it does not fit."""

import os
import types

import jax
import pytest

from sora_jax import memory
from sora_jax.config import ConfigError
from sora_jax.nn import attention


def tiny_image_bytes(size, guidance=True):
  """configs/shapes.py:tiny sampling one size x size image (patch 2 x 2: a 1-row batch)."""
  tokens = (size // 16) ** 2
  return memory.sampling_bytes(
      rows=1,
      row_length=max(32, -(-tokens // 128) * 128),
      width=32,
      num_heads=2,
      mlp_ratio=4.0,
      patch_dim=16,
      caption_tokens=64,
      guidance=guidance,
      videos=1,
      latent_shape=(1, size // 8, size // 8, 4),
      vae_base_channels=8,
      vae_channel_mult=(1, 1, 2, 2),
      chunk_latents=2,
  )


def test_estimate_follows_the_attention_path(monkeypatch):
  """Blockwise attention leaves a 2048x2048 image the decoder's few GB (2.8 GB peak RSS measured);
  dense logits (9.3 GB measured) add the logits and softmax weights, [2 rows, 2 heads, 16384, 16384]."""
  blockwise = tiny_image_bytes(2048)
  assert 2e9 < blockwise < 4e9
  monkeypatch.setattr(attention, "DENSE_MAX_LOGITS", float("inf"))
  assert tiny_image_bytes(2048) > 2 * 2 * 2 * 16384**2 * 4
  assert tiny_image_bytes(2048, guidance=False) < tiny_image_bytes(2048)


def test_too_large_a_request_is_refused_in_one_line(monkeypatch):
  monkeypatch.setattr(memory, "available_bytes", lambda: (23.5e9, "this machine"))
  memory.check_fits(23e9, "sampling 2048x2048")
  with pytest.raises(ConfigError) as error:
    memory.check_fits(41e9, "sampling 4096x4096")
  assert str(error.value) == (
      "sampling 4096x4096 needs about 41.0 GB (estimated); this machine has "
      "23.5 GB available: ask for a smaller size"
  )


def test_available_memory_of_the_host_and_of_an_accelerator(monkeypatch):
  free, where = memory.available_bytes()
  assert where == "this machine" and 0 < free <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  gpu = types.SimpleNamespace(
      platform="gpu",
      device_kind="NVIDIA H100",
      memory_stats=lambda: {"bytes_limit": 80e9, "bytes_in_use": 10e9},
  )
  monkeypatch.setattr(jax, "devices", lambda: [gpu])
  assert memory.available_bytes() == (70e9, "the NVIDIA H100")
