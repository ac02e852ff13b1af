"""Stage 1: train the causal video VAE on random clips of the synthetic videos (or, with
vae_train.clips, on real footage: train/video_vae_stage.py)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from sora_jax.data.stream import StepBatches
from sora_jax.data.synthetic import render, sample_spec
from sora_jax.data.transforms import to_model_range
from sora_jax.models.build import build_vae
from sora_jax.models.vae import pca_init, vae_loss
from sora_jax.train.loop import fit, host_rng
from sora_jax.parallel.rules import logical_sharding
from sora_jax.parallel.sharding import global_batch, replicated, sharded_train_step
from sora_jax.train.state import create_state, make_optimizer, make_train_step


def vae_batch(config, step, stream=1):
  """[B, T, S, S, 3] crops of videos of every training size, so the VAE sees every scale."""
  vt = config.vae_train
  rng = host_rng(config.seed, stream, step)
  clips = []
  for _ in range(vt.batch_size):
    video = render(
        sample_spec(
            rng,
            frames=(vt.clip_frames,),
            sizes=tuple(map(tuple, config.data.sizes)),
            textured=config.data.textured_fraction,
        )
    )
    y = rng.integers(0, video.shape[1] - vt.clip_size + 1)
    x = rng.integers(0, video.shape[2] - vt.clip_size + 1)
    clips.append(video[:, y : y + vt.clip_size, x : x + vt.clip_size])
  return to_model_range(np.stack(clips)), {}


def train_vae(config, workdir, mesh):
  """Returns (vae module, EMA params) after training or resuming the VAE stage.

  Data parallel over the mesh's batch axes; the (small) VAE is replicated.
  """
  vt = config.vae_train
  if vt.clips:  # real footage: its own losses and data
    from sora_jax.train.video_vae_stage import train_video_vae

    return train_video_vae(config, workdir, mesh)
  vae = build_vae(config.vae)
  example, _ = vae_batch(config, 0)
  params = jax.jit(vae.init)(jax.random.key(config.seed), jnp.asarray(example[:1]))["params"]
  # PCA of clips the training never draws (a separate stream) initialises the linear path.
  pca_clips = np.concatenate([vae_batch(config, i, stream=4)[0] for i in range(vt.pca_batches)])
  params = pca_init(vae, params, pca_clips, motion_weight=vt.pca_motion_weight)
  tx, schedule = make_optimizer(
      lr=vt.lr, warmup=vt.warmup, total_steps=vt.steps, grad_clip=config.train.grad_clip
  )

  def loss_fn(params, batch, rng):
    return vae_loss(vae, params, batch["video"], rng, kl_weight=config.vae.kl_weight)

  state_sharding = replicated(mesh)
  video_sharding = {"video": logical_sharding(P("batch"), mesh)}
  step_fn = sharded_train_step(
      make_train_step(loss_fn, tx, schedule, config.train.ema_decay), mesh, state_sharding, video_sharding
  )

  def batch_at(step):
    # Every host renders the same clips and keeps its rows: VAE batches are small.
    video, metrics = vae_batch(config, step)
    rows = len(video) // jax.process_count()
    return {"video": video[jax.process_index() * rows : (jax.process_index() + 1) * rows]}, metrics

  state = fit(
      "vae",
      workdir=workdir,
      state=jax.device_put(create_state(params, tx), state_sharding),
      train_step=step_fn,
      data=StepBatches(batch_at),
      num_steps=vt.steps,
      seed=config.seed,
      put_batch=lambda local: global_batch(local, video_sharding, vt.batch_size),
      config=config.to_dict(),
      log_every=config.train.log_every,
      checkpoint_every=config.train.checkpoint_every,
      max_nonfinite_in_row=config.train.max_nonfinite_in_row,
  )
  return vae, state.ema_params
