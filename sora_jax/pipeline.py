"""The main job: VAE stage, DiT stage, then samples and the shapes evaluation."""
import dataclasses
import os

import jax
import numpy as np

from sora_jax.data.video_io import write_video
from sora_jax.evaluation.shapes import analyse_video, eval_prompts, opening_frames, summarise
from sora_jax.files import write_json
from sora_jax.data.latents import write_stats
from sora_jax.generate import CONFIG_FILE, LATENT_STATS_FILE, Pipeline, sample_settings
from sora_jax.mode_evaluation import evaluate_modes, parse_modes
from sora_jax.models.build import build_dit
from sora_jax.parallel.mesh import check_divisibility, make_mesh
from sora_jax.train.dit_stage import train_dit
from sora_jax.train.vae_stage import train_vae


def train_and_evaluate(config, workdir, vae_only=False):
  """VAE stage, then (unless vae_only) DiT stage, samples and the shapes evaluation."""
  mesh = make_mesh(config.mesh)
  check_divisibility(config, mesh)
  os.makedirs(workdir, exist_ok=True)
  write_json(os.path.join(workdir, CONFIG_FILE), config.to_dict())
  vae, vae_params = train_vae(config, workdir, mesh)
  if vae_only:
    return {"vae": os.path.join(workdir, "checkpoints", "vae")}
  dit, dit_params, stats = train_dit(config, workdir, vae, vae_params, mesh,
                                     on_sample=progress_sampler(config, workdir, vae, vae_params))
  write_stats(os.path.join(workdir, LATENT_STATS_FILE), stats)
  pipe = Pipeline(config, vae, vae_params, dit, dit_params, stats)
  return evaluate(pipe, workdir, seed=0, **sample_settings(config))


# Fixed prompts (one training combination, one held out) sampled with a fixed seed during training.
PROGRESS_PROMPTS = ("a red circle moves to the right", "a blue square moves down")


def progress_sampler(config, workdir, vae, vae_params):
  """on_sample for the DiT stage: fixed-seed videos into DIR/progress/step_N/ and TensorBoard."""
  pipe = Pipeline(config, vae, vae_params, build_dit(config), None, None)

  def on_sample(step, ema_params, stats, writer):
    # The same compiled sampler every time: only the weights change.
    videos = dataclasses.replace(pipe, dit_params=ema_params, latent_stats=stats).generate(
        list(PROGRESS_PROMPTS), seed=0, **sample_settings(config))
    if jax.process_index():
      return
    for i, video in enumerate(videos):
      write_video(os.path.join(workdir, "progress", f"step_{step}", f"{i}.mp4"), video, fps=config.sample.fps)
      if writer:  # frames side by side: one image per prompt
        writer.add_image(f"dit/sample_{i}", np.concatenate(list(video), axis=1), step, dataformats="HWC")

  return on_sample


def evaluate(pipe, workdir, *, num_frames, height, width, steps, guidance, seed, modes=None):
  """Sample the held-out prompt set, write the videos, score colour/direction/shape; then score
  the prompting modes (`modes`, as `sample.eval_modes` by default) on the same prompts.

  The same prompts are also animated from each one's true opening frame (image-to-video alone,
  reported under "image_to_video"): that tells where the first stage puts the shape apart from
  how image-to-video moves it (`sample.first_frame`).
  """
  prompts = eval_prompts(num_frames=num_frames, height=height, width=width)
  captions = [p["caption"] for p in prompts]
  settings = dict(num_frames=num_frames, height=height, width=width, steps=steps, guidance=guidance, seed=seed)
  videos = pipe.generate(captions, **settings)
  results = []
  for i, (p, video) in enumerate(zip(prompts, videos)):
    write_video(os.path.join(workdir, "samples", f"{i:02d}_{p['colour']}_{p['shape']}_{p['direction']}.mp4"),
                video, fps=pipe.config.sample.fps)
    results.append(_scored(video, p))
  summary = summarise(results)
  report = {"summary": summary, "results": results}
  if num_frames > 1:
    i2v = pipe.generate(captions, first_frames=opening_frames(prompts), **settings)
    summary["image_to_video"] = summarise([_scored(video, p) for p, video in zip(prompts, i2v)])
    by_mode = evaluate_modes(pipe, prompts, parse_modes(pipe.config.sample.eval_modes if modes is None else modes),
                             steps=steps, guidance=guidance, seed=seed)
    for name, scored in by_mode.items():
      summary[name] = scored["summary"]
      report[name] = scored["results"]
  write_json(os.path.join(workdir, "eval.json"), report)
  return summary


def _scored(video, prompt):
  r = analyse_video(video, prompt["colour"], prompt["direction"], prompt["shape"])
  return ({k: r[k] for k in ("colour_ok", "direction_ok", "shape_ok", "dominant_colour", "direction", "shape")}
          | {"caption": prompt["caption"]})
