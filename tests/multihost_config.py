"""The config shared by the two-process test and its one-process reference."""
from configs.shapes import get_config
from sora_jax.config import mesh_config


def config():
  c = get_config("tiny")
  c.mesh = mesh_config(data=2, fsdp=2)  # 4 devices: 2 processes x 2, or one process with 4
  c.train.steps = 3
  return c
