"""Does the VAE keep motion inside a latent frame? (docs/design.md, "Causal VAE")

The 16 held-out true clips (17 frames, 48x48, quick speed) are encoded and decoded; the shape's
centroid steps are averaged inside latent frames (frames 1-4, 5-8, ...) and across their borders
(0->1, 4->5, ...), beside the true 1.63 px per frame, with the reconstruction's PSNR.

  python docs/scripts/vae_motion.py --weights=1,3,4     # the PCA-initialised VAE (step 0)
  python docs/scripts/vae_motion.py --workdir=runs/shapes  # a trained run's VAE
"""

import argparse

from sora_jax import platforms

platforms.skip_absent_tpu()  # before jax is imported: no libtpu start-up noise without a TPU

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from sora_jax.data.latents import encode_videos  # noqa: E402
from sora_jax.data.transforms import to_uint8  # noqa: E402
from sora_jax.evaluation.shapes import analyse_video, eval_prompts, true_clip  # noqa: E402
from sora_jax.models.vae import decode_chunked  # noqa: E402

ACROSS = [0, 4, 8, 12]  # steps into a new latent frame (frame 0 is a latent frame of its own)


def motion_kept(vae, params, prompts, clips):
  """(px moved per frame inside latent frames, across their borders, PSNR dB)."""
  within, across, psnr = [], [], []
  for (mean, _), p, clip in zip(encode_videos(vae, params, clips), prompts, clips):
    video = to_uint8(np.asarray(decode_chunked(vae, params, jnp.asarray(mean[None]), chunk_latents=2)[0]))
    psnr.append(10 * np.log10(255**2 / np.mean((video.astype(float) - clip) ** 2)))
    steps = np.linalg.norm(
        np.diff(analyse_video(video, p["colour"], p["direction"])["track"], axis=0), axis=-1
    )
    within.append(np.delete(steps, ACROSS).mean())
    across.append(steps[ACROSS].mean())
  return np.mean(within), np.mean(across), np.mean(psnr)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", help="a run whose trained VAE to measure")
  parser.add_argument("--weights", default="1,4", help="pca_motion_weight values for the step-0 VAE")
  args = parser.parse_args()
  prompts = eval_prompts()
  clips = [true_clip(p, i) for i, p in enumerate(prompts)]
  true = np.linalg.norm(
      np.diff(analyse_video(clips[0], prompts[0]["colour"], "right")["track"], axis=0), axis=-1
  )
  print(f"true clips: {true.mean():.2f} px per frame")
  if args.workdir:
    from sora_jax.generate import Pipeline

    pipe = Pipeline.load(args.workdir, dit=False)
    print(
        "%s: within %.2f px, across %.2f px, PSNR %.1f dB"
        % (args.workdir, *motion_kept(pipe.vae, pipe.vae_params, prompts, clips))
    )
    return
  from configs.shapes import get_config
  from sora_jax.models.build import build_vae
  from sora_jax.models.vae import pca_init
  from sora_jax.train.vae_stage import vae_batch

  config = get_config()
  vae = build_vae(config.vae)
  params = jax.jit(vae.init)(jax.random.key(0), jnp.asarray(vae_batch(config, 0)[0][:1]))["params"]
  fit = np.concatenate([vae_batch(config, i, stream=4)[0] for i in range(config.vae_train.pca_batches)])
  for weight in map(float, args.weights.split(",")):
    initialised = pca_init(vae, params, fit, motion_weight=weight)
    print(
        "pca_motion_weight=%g: within %.2f px, across %.2f px, PSNR %.1f dB"
        % (weight, *motion_kept(vae, initialised, prompts, clips))
    )


if __name__ == "__main__":
  main()
