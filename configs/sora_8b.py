"""A Sora-scale DiT (8.6B parameters) at long context: 5 s of 1080p (121 frames, 1088x1920).

One 1080p clip is 31 x 68 x 120 = 252,960 tokens, so a row holds 2^18 tokens and the token axis
is split over `context`; splash attention keeps attention memory linear in length, and every
block is rematerialised. Used with `sora-jax aot` to check fit and speed on pods:

  sora-jax aot --config=configs/sora_8b.py:v5p --topology=v5p-256
  sora-jax aot --config=configs/sora_8b.py:v6e --topology=v6e-256
"""
from sora_jax.config import default_config, mesh_config


def get_config(arg="v5p"):
  c = default_config()
  c.data.frames = (1, 33, 121)
  c.data.sizes = ((720, 1280), (1088, 1920), (1920, 1088))
  c.vae.base_channels = 128
  c.vae.channel_mult = (1, 2, 4, 4)
  c.vae.num_res_blocks = 2

  c.model.width = 3072
  c.model.depth = 42
  c.model.num_heads = 24
  c.model.attention_impl = "splash"
  c.model.dtype = "bfloat16"
  c.model.remat = "full"
  c.model.scan_layers = True
  c.model.text.vocab_size = 32768
  c.model.text.max_len = 128
  c.model.text.width = 1024
  c.model.text.depth = 4
  c.model.text.num_heads = 8

  c.train.row_length = 2 ** 18
  c.train.max_per_row = 64
  c.train.lr = 1e-4
  c.train.warmup = 1000
  c.train.steps = 200_000
  c.train.weight_decay = 0.01
  c.aot.example_grid = (31, 68, 120)

  c.sample.num_frames = 121
  c.sample.height = 1088
  c.sample.width = 1920
  if arg == "v5p":    # v5p-256: 128 chips x 95 GiB
    c.train.rows = 4
    c.mesh = mesh_config(data=1, fsdp=4, context=8, tensor=4)
  elif arg == "v6e":  # v6e-256: 256 chips x 32 GiB
    c.train.rows = 8
    c.mesh = mesh_config(data=1, fsdp=8, context=8, tensor=4)
  else:
    raise ValueError(f"configs/sora_8b.py has no variant {arg!r}; use 'v5p' or 'v6e'")
  return c
