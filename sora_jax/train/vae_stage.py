"""Stage 1: train the causal video VAE on random clips of the synthetic videos."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sora_jax.data.synthetic import render, sample_spec
from sora_jax.data.transforms import to_model_range
from sora_jax.models.build import build_vae
from sora_jax.models.vae import pca_init, vae_loss
from sora_jax.train.loop import fit, host_rng
from sora_jax.train.state import apply_gradients, create_state, make_optimizer


def vae_batch(config, step, stream=1):
  """[B, T, S, S, 3] crops of videos of every training size, so the VAE sees every scale."""
  vt = config.vae_train
  rng = host_rng(config.seed, stream, step)
  clips = []
  for _ in range(vt.batch_size):
    video = render(sample_spec(rng, frames=(vt.clip_frames,), sizes=tuple(map(tuple, config.data.sizes))))
    y = rng.integers(0, video.shape[1] - vt.clip_size + 1)
    x = rng.integers(0, video.shape[2] - vt.clip_size + 1)
    clips.append(video[:, y:y + vt.clip_size, x:x + vt.clip_size])
  return to_model_range(np.stack(clips)), {}


def train_vae(config, workdir):
  """Returns (vae module, EMA params) after training or resuming the VAE stage."""
  vt = config.vae_train
  vae = build_vae(config.vae)
  example, _ = vae_batch(config, 0)
  params = jax.jit(vae.init)(jax.random.key(config.seed), jnp.asarray(example[:1]))["params"]
  # PCA of clips the training never draws (a separate stream) initialises the linear path.
  pca_clips = np.concatenate([vae_batch(config, i, stream=4)[0] for i in range(vt.pca_batches)])
  params = pca_init(vae, params, pca_clips)
  tx, schedule = make_optimizer(lr=vt.lr, warmup=vt.warmup, total_steps=vt.steps,
                                grad_clip=config.train.grad_clip)

  @jax.jit
  def train_step(state, batch, rng):
    loss_fn = functools.partial(vae_loss, vae, video=batch, rng=rng, kl_weight=config.vae.kl_weight)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = apply_gradients(state, grads, tx, config.train.ema_decay)
    return new_state, {**metrics, "loss": loss, "lr": schedule(state.step),
                       "grad_norm": optax.global_norm(grads)}

  state = fit("vae", workdir=workdir, state=create_state(params, tx), train_step=train_step,
              batch_at=lambda step: vae_batch(config, step), num_steps=vt.steps, seed=config.seed,
              log_every=config.train.log_every, checkpoint_every=config.train.checkpoint_every)
  return vae, state.ema_params
