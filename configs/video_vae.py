"""The causal video VAE trained on real footage (train/video_vae_stage.py): prepared clips at
mixed resolutions and lengths, L1 + SSIM + KL, then a 3D patch discriminator with an adaptive
weight after a warm-up. Nothing pretrained. Prepare the clips first, holding some videos out (a VAE
reads no captions: --caption names the videos that have none):

  sora-jax prepare --input=VIDEOS --output=data/footage --max_size=256 --validation_fraction=0.2 \
    --caption="real footage"
  sora-jax train --vae_only --config=configs/video_vae.py --config.vae_train.clips=data/footage \
    --workdir=runs/video_vae
  sora-jax eval-vae --workdir=runs/video_vae --input=data/footage --split=validation

Variants: `configs/video_vae.py` (a CPU-sized run: about 15 minutes on 2 cores, docs/benchmarks.md)
and `configs/video_vae.py:tiny` (tests). At scale, raise the widths, buckets and steps.
"""

from sora_jax.config import default_config


def get_config(arg=None):
  c = default_config()
  # The shapes VAE's widths (base 16): the comparison in docs/benchmarks.md is of data and
  # losses, not of size; at scale raise them.
  c.vae.kl_weight = 1e-6  # a light KL: reconstruction first, as video VAEs weight it
  vt = c.vae_train
  vt.steps = 400
  vt.batch_size = 4
  vt.pca_batches = 8  # the linear path starts as a PCA of footage crops (as the shapes VAE's)
  vt.lr = 3e-4
  vt.warmup = 100
  # (frames, height, width) in turn: clips at two sizes and images, so the causal first frame,
  # chunk borders and scale all get trained.
  vt.buckets = ((9, 32, 32), (5, 48, 64), (1, 64, 64))
  vt.disc_start = 250
  vt.disc_weight = 0.5
  c.train.log_every = 50
  c.train.checkpoint_every = 250
  if arg == "tiny":
    c.vae.base_channels = 8
    c.vae.latent_channels = 4
    c.vae.channel_mult = (1, 1, 2, 2)
    vt.steps, vt.batch_size, vt.disc_start, vt.warmup, vt.pca_batches = 4, 8, 2, 1, 1
    c.train.rows = 8  # divisible by the 8 fake test devices
    vt.buckets = ((5, 16, 16), (1, 32, 32))
    vt.disc_channels, vt.disc_layers = 8, 2
    c.train.log_every = c.train.checkpoint_every = 2
  return c
