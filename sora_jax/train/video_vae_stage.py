"""Stage 1 on real footage: the causal VAE trained on prepared clips (`sora-jax prepare`) at mixed
resolutions and lengths, with the losses video VAEs use (configs/video_vae.py).

Loss = L1 + ssim_weight * (1 - SSIM) + kl_weight * KL, and after `disc_start` steps an adversarial
term against a 3D patch discriminator (hinge loss), weighted adaptively as VQGAN / MAGVIT /
Open-Sora do: lambda = |grad L_rec| / |grad L_G|, here taken at the decoder's output rather than
its last layer's kernel (the same balance, without reaching into the decoder), times
`disc_weight`. The discriminator's parameters live in the same train state as the VAE's
({"vae", "disc"}): one loss whose gradient is the VAE's loss for the VAE (the discriminator held
fixed by stop_gradient) and the discriminator's hinge loss for it (the reconstruction held fixed),
so the one train loop, checkpoints and exact resume serve the GAN too.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P
from PIL import Image

from sora_jax.data.prepare import clip_source
from sora_jax.data.stream import StepBatches
from sora_jax.data.transforms import to_model_range
from sora_jax.evaluation.pixels import psnr, ssim
from sora_jax.models.build import build_vae
from sora_jax.models.discriminator import PatchDiscriminator3D
from sora_jax.models.vae import pca_init
from sora_jax.parallel.rules import logical_sharding
from sora_jax.parallel.sharding import global_batch, replicated, sharded_train_step
from sora_jax.train.loop import fit, host_rng
from sora_jax.train.state import create_state, make_optimizer, make_train_step


def crop(video, frames, height, width, rng):
  """A random (frames, height, width) crop of uint8 [T, H, W, 3]: `frames` consecutive frames,
  the picture first scaled by a random factor between covering the crop and its own size (so
  both whole scenes at low resolution and native-resolution detail are seen)."""
  t, h, w = video.shape[:3]
  start = rng.integers(0, t - frames + 1)
  video = video[start : start + frames]
  cover = max(height / h, width / w)
  scale = rng.uniform(cover, max(cover, 1.0))
  size = (max(width, round(w * scale)), max(height, round(h * scale)))
  if size != (w, h):
    video = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC)) for f in video])
  y = rng.integers(0, video.shape[1] - height + 1)
  x = rng.integers(0, video.shape[2] - width + 1)
  return video[:, y : y + height, x : x + width]


def footage_batch(config, clips, step):
  """[B, T, H, W, 3] in [-1, 1] of this step's bucket (vae_train.buckets, in turn), cut from
  random prepared clips; `gan` marks steps past the discriminator's warm-up."""
  vt = config.vae_train
  frames, height, width = vt.buckets[step % len(vt.buckets)]
  rng = host_rng(config.seed, 5, step)
  videos = [
      crop(clips[int(i)]["video"], frames, height, width, rng)
      for i in rng.integers(0, len(clips), vt.batch_size)
  ]
  gan = np.full((vt.batch_size,), float(step >= vt.disc_start), np.float32)
  return {"video": to_model_range(np.stack(videos)), "gan": gan}


def footage_loss(vae, disc, config):
  """loss_fn(params {"vae", "disc"}, batch, rng) -> (loss, metrics) of the module docstring."""
  vt = config.vae_train

  def loss_fn(params, batch, rng):
    video, gan_on = batch["video"], jnp.mean(batch["gan"])
    recon, mean, logvar = vae.apply({"params": params["vae"]}, video, sample_rng=rng)
    frozen = jax.lax.stop_gradient(params["disc"])

    def reconstruction(x):
      return jnp.mean(jnp.abs(x - video)) + vt.ssim_weight * jnp.mean(1 - ssim(x, video))

    def generator(x):
      return -jnp.mean(disc.apply({"params": frozen}, x))

    rec_grad, gen_grad = jax.grad(reconstruction)(recon), jax.grad(generator)(recon)
    adaptive = jnp.clip(jnp.linalg.norm(rec_grad) / (jnp.linalg.norm(gen_grad) + 1e-4), 0.0, 1e4)
    adaptive = jax.lax.stop_gradient(adaptive) * vt.disc_weight * gan_on
    kl = 0.5 * jnp.mean(mean**2 + jnp.exp(logvar) - 1.0 - logvar)
    rec, gen = reconstruction(recon), generator(recon)
    real = disc.apply({"params": params["disc"]}, video)
    fake = disc.apply({"params": params["disc"]}, jax.lax.stop_gradient(recon))
    hinge = jnp.mean(jax.nn.relu(1 - real)) + jnp.mean(jax.nn.relu(1 + fake))
    loss = rec + config.vae.kl_weight * kl + adaptive * gen + gan_on * hinge
    return loss, {
        "loss": loss,
        "recon": rec,
        "kl": kl,
        "generator": gen,
        "discriminator": hinge,
        "adaptive_weight": adaptive,
        "psnr": jnp.mean(psnr(recon, video)),
    }

  return loss_fn


def train_video_vae(config, workdir, mesh):
  """Returns (vae module, EMA VAE params) after training or resuming on vae_train.clips."""
  vt = config.vae_train
  clips = clip_source(vt.clips)
  vae, disc = build_vae(config.vae), PatchDiscriminator3D(vt.disc_channels, vt.disc_layers)
  example = jnp.asarray(footage_batch(config, clips, 0)["video"][:1])
  keys = jax.random.split(jax.random.key(config.seed))
  params = {
      "vae": jax.jit(vae.init)(keys[0], example)["params"],
      "disc": jax.jit(disc.init)(keys[1], example)["params"],
  }
  if vt.pca_batches:  # the linear path from a PCA of crops of the first bucket, as for the shapes
    crops = [footage_batch(config, clips, len(vt.buckets) * i)["video"] for i in range(vt.pca_batches)]
    params["vae"] = pca_init(vae, params["vae"], np.concatenate(crops), motion_weight=vt.pca_motion_weight)
  tx, schedule = make_optimizer(
      lr=vt.lr, warmup=vt.warmup, total_steps=vt.steps, grad_clip=config.train.grad_clip
  )
  state_sharding = replicated(mesh)
  batch_sharding = {"video": logical_sharding(P("batch"), mesh), "gan": logical_sharding(P("batch"), mesh)}
  step_fn = sharded_train_step(
      make_train_step(footage_loss(vae, disc, config), tx, schedule, config.train.ema_decay),
      mesh,
      state_sharding,
      batch_sharding,
  )

  def batch_at(step):
    batch = footage_batch(config, clips, step)  # every host cuts the same crops, keeps its rows
    rows = vt.batch_size // jax.process_count()
    return jax.tree.map(lambda x: x[jax.process_index() * rows : (jax.process_index() + 1) * rows], batch), {}

  state = fit(
      "vae",
      workdir=workdir,
      state=jax.device_put(create_state(params, tx), state_sharding),
      train_step=step_fn,
      data=StepBatches(batch_at),
      num_steps=vt.steps,
      seed=config.seed,
      put_batch=lambda local: global_batch(local, batch_sharding, vt.batch_size),
      config=config.to_dict(),
      log_every=config.train.log_every,
      checkpoint_every=config.train.checkpoint_every,
      max_nonfinite_in_row=config.train.max_nonfinite_in_row,
      prefetch=config.train.prefetch,
  )
  return vae, state.ema_params["vae"]
