"""Moving-shapes text-to-video: the embedded default job (trains on 2 CPU cores).

Variants: `configs/shapes.py` (the README's main job) and `configs/shapes.py:tiny` (tests).
"""
import ml_collections

from sora_jax.config import mesh_config

SIZES = ((32, 32), (32, 48), (48, 32), (48, 48), (32, 64), (64, 32), (48, 64), (64, 48), (64, 64))


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.frames = (1, 5, 9, 13, 17)   # 1 + 4k: the causal VAE encodes frame 0 alone
  c.data.sizes = SIZES                # (height, width) pairs; divisible by 8 * patch
  c.data.num_examples = 3000          # videos generated, encoded once and cached as latents
  c.data.caption_dropout = 0.1        # null caption rate, for classifier-free guidance

  c.vae = ml_collections.ConfigDict()
  c.vae.latent_channels = 16
  c.vae.base_channels = 16
  c.vae.channel_mult = (1, 2, 2, 4)
  c.vae.num_res_blocks = 1
  c.vae.temporal_downsample = (False, True, True)
  c.vae.kl_weight = 1e-4

  c.vae_train = ml_collections.ConfigDict()
  c.vae_train.steps = 300
  c.vae_train.batch_size = 8
  c.vae_train.clip_frames = 9
  c.vae_train.clip_size = 32
  c.vae_train.lr = 5e-4
  c.vae_train.warmup = 50
  c.vae_train.pca_batches = 32       # batches whose PCA initialises the VAE's linear path

  c.model = ml_collections.ConfigDict()
  c.model.patch = (1, 2, 2)
  c.model.width = 128
  c.model.depth = 4
  c.model.num_heads = 4
  c.model.mlp_ratio = 4.0
  c.model.attention_patterns = ("full",)   # cycled over layers: full | spatial | temporal
  c.model.pos_emb = "rope"                 # rope (3D rotary) | sincos (p_t(t) + p_s(h, w))
  c.model.qk_norm = True
  c.model.attention_impl = "xla"
  c.model.dtype = "float32"                # compute dtype; parameters stay float32
  c.model.remat = "none"                   # none | full | dots (save matmul outputs)
  c.model.text = ml_collections.ConfigDict()
  c.model.text.vocab_size = 4096
  c.model.text.max_len = 24
  c.model.text.width = 128
  c.model.text.depth = 1
  c.model.text.num_heads = 4

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.objective = "flow"           # flow | ddpm
  c.diffusion.time_sampling = "logit_normal"
  c.diffusion.logit_mean = 0.0
  c.diffusion.logit_std = 1.0
  c.diffusion.shift_base_tokens = 64       # shift = sqrt(tokens / base)
  c.diffusion.beta_schedule = "linear"     # ddpm only: linear | cosine
  c.diffusion.prediction = "eps"           # ddpm only: eps | v

  c.train = ml_collections.ConfigDict()
  c.train.steps = 3000
  c.train.rows = 4                         # B: packed rows per step
  c.train.row_length = 256                 # L: tokens per row
  c.train.max_per_row = 16                 # E: example slots per row
  c.train.lr = 2e-3
  c.train.warmup = 100
  c.train.weight_decay = 0.0
  c.train.grad_clip = 1.0
  c.train.ema_decay = 0.995
  c.train.log_every = 25
  c.train.checkpoint_every = 500

  c.mesh = mesh_config()                   # all devices on `data` by default

  c.aot = ml_collections.ConfigDict()
  c.aot.example_grid = (5, 3, 3)           # patch grid of the examples assumed by `aot` FLOPs

  c.sample = ml_collections.ConfigDict()
  c.sample.steps = 30
  c.sample.guidance = 4.0
  c.sample.num_frames = 17
  c.sample.height = 48
  c.sample.width = 48
  c.sample.fps = 8
  c.sample.chunk_latents = 2

  if arg == "tiny":
    c.data.frames = (1, 5, 9)
    c.data.sizes = ((16, 16), (16, 32), (32, 16))
    c.data.num_examples = 16
    c.vae.latent_channels = 4
    c.vae.base_channels = 8
    c.vae.channel_mult = (1, 1, 2, 2)
    c.vae_train.steps = 3
    c.vae_train.batch_size = 8
    c.vae_train.clip_frames = 5
    c.vae_train.clip_size = 16
    c.vae_train.pca_batches = 2
    c.model.width = 32
    c.model.depth = 2
    c.model.num_heads = 2
    c.model.attention_patterns = ("full", "spatial")
    c.model.text.vocab_size = 256
    c.model.text.max_len = 16
    c.model.text.width = 16
    c.train.steps = 3
    c.train.rows = 8                       # divisible by the 8 fake test devices
    c.train.row_length = 32
    c.train.max_per_row = 4
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.sample.steps = 2
    c.sample.num_frames = 5
    c.sample.height = 16
    c.sample.width = 16
  elif arg is not None:
    raise ValueError(f"configs/shapes.py has no variant {arg!r}; use 'tiny' or nothing")
  return c
