"""A 3D patch discriminator for training the video VAE on real footage (MAGVIT, Open-Sora and Wan
train their video VAEs against one): strided 3D convolutions to one logit per spacetime patch,
so it judges local texture and motion, not the whole clip, and works at any clip size."""

import flax.linen as nn
import jax.numpy as jnp


class PatchDiscriminator3D(nn.Module):
  """Video [B, T, H, W, 3] in [-1, 1] -> logits [B, T', H / 2^layers, W / 2^layers, 1]. Each
  layer halves space (and time, down to one frame: an image is a 1-frame video)."""

  channels: int = 32
  layers: int = 3

  @nn.compact
  def __call__(self, video):
    x = video.astype(jnp.float32)
    for i in range(self.layers):
      x = nn.Conv(
          self.channels * 2 ** min(i, 3), (3, 4, 4), strides=(1 if i == 0 else 2, 2, 2), padding="SAME"
      )(x)
      if i:  # no normalisation on the first layer (as PatchGAN)
        x = nn.GroupNorm(num_groups=min(32, x.shape[-1] // 4))(x)
      x = nn.leaky_relu(x, 0.2)
    return nn.Conv(1, (3, 3, 3), padding="SAME")(x)
