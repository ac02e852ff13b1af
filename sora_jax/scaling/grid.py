"""`sora-jax grid`: the same prompts and seeds sampled by models at several compute points, as
the Sora report shows base, 4x and 32x compute side by side (and the DiT paper its models):
every finished cell of a sweep (`--sweep=DIR`), or the kept checkpoints along one run
(`--workdir=DIR`, e.g. `train.keep_steps`).

Every tile of a (prompt, seed) row starts from the same initial latent whatever the model
(`Request.seed` = (seed, prompt index): the noise depends on it and the latent shape only,
`generate.request_noise`), with the same sampler, steps and guidance. Columns are the models by
training FLOPs, each labelled with them; every tile is scored by the shapes evaluator. Writes
grid.png (a contact sheet: a few frames per tile), grid.mp4 (every tile playing) and grid.json
(the scores) to DIR/report/ (a sweep) or DIR/grid/ (a run).
"""

import functools
import os

import numpy as np
from PIL import Image, ImageDraw

from sora_jax.config import ConfigError
from sora_jax.data.video_io import write_video
from sora_jax.evaluation.shapes import analyse_video, eval_prompts
from sora_jax.files import atomic_path, write_json
from sora_jax.generate import Pipeline, Request, run_config
from sora_jax.scaling.fit import read_cells_status

LABEL_PX = 14  # label strip height
SHEET_FRAMES = 3  # frames per tile on the contact sheet: first, middle, last


def grid_requests(prompts, seeds, num_frames, height, width):
  """One request per (prompt, seed), its noise fixed by (seed, prompt index)."""
  return [
      Request(p["caption"], num_frames, height, width, seed=(seed, k))
      for k, p in enumerate(prompts)
      for seed in seeds
  ]


def _spread(items, max_models):
  """At most max_models of the (FLOPs-sorted) items, spread over the range, both ends kept."""
  if len(items) <= max_models:
    return items
  return [items[i] for i in np.linspace(0, len(items) - 1, max_models).round().astype(int)]


def sweep_models(sweep_dir, max_models):
  """A sweep's finished cells as (label, flops, load), by FLOPs: of an iso-FLOP sweep, the best
  cell (lowest validation loss) of each budget, the compute frontier's models."""
  done = [s for s in read_cells_status(sweep_dir) if s["status"] == "done"]
  if not done:
    raise ConfigError(f"{sweep_dir}: no finished cells to sample; run `sora-jax sweep` first")
  if all(s.get("budget") for s in done):
    best = {}
    for s in done:
      if s["budget"] not in best or s["validation_loss"] < best[s["budget"]]["validation_loss"]:
        best[s["budget"]] = s
    done = list(best.values())
  done.sort(key=lambda s: s["flops"])
  return [
      (
          f"d{s['depth']} {s['flops']:.2g} FLOPs",
          s["flops"],
          functools.partial(Pipeline.load, os.path.join(sweep_dir, "cells", s["hash"])),
      )
      for s in _spread(done, max_models)
  ]


def run_models(workdir, max_models):
  """One run's kept DiT checkpoints as (label, flops, load), by step: FLOPs = step x the
  config's training FLOPs per step."""
  from sora_jax.scaling.sweep import step_flops
  from sora_jax.train.checkpoint import Checkpointer

  per_step = step_flops(run_config(workdir))
  folder = os.path.join(workdir, "checkpoints", "dit")
  if not os.path.isdir(folder):
    raise ConfigError(f"{workdir}: no DiT checkpoints; run `sora-jax train --workdir={workdir}` first")
  ckpt = Checkpointer(folder)
  steps = ckpt.all_steps()
  ckpt.close()
  if len(steps) < 2:
    raise ConfigError(
        f"{workdir}: {len(steps)} kept DiT checkpoint(s) ({steps}); a grid along a run needs at least 2 "
        "(train with --config.train.keep_steps=..., e.g. 45,180,750,3000)"
    )
  return [
      (
          f"step {k} {k * per_step:.2g} FLOPs",
          k * per_step,
          functools.partial(Pipeline.load, workdir, dit_step=k),
      )
      for k in _spread(steps, max_models)
  ]


def sample_grid(models, out, *, num_prompts=4, seeds=(0, 1), steps=None, guidance=None):
  """Sample every (prompt, seed) with each of `models` [(label, flops, load)] and write
  out/grid.{png,mp4,json}; returns the scores."""
  pipes = {0: models[0][2]()}
  s = pipes[0].config.sample
  prompts = eval_prompts(num_frames=s.num_frames, height=s.height, width=s.width)[:num_prompts]
  requests = grid_requests(prompts, seeds, s.num_frames, s.height, s.width)
  run = {"steps": steps or s.steps, "guidance": guidance or s.guidance, "seed": 0}
  columns, scores = [], []
  for i, (label, flops, load) in enumerate(models):
    pipe = pipes.pop(i) if i in pipes else load()
    videos = pipe.sample(requests, **run)
    column = []
    for r, v in zip(requests, videos):
      p = prompts[r.seed[1]]
      score = analyse_video(v, p["colour"], p["direction"])
      scores.append(
          {
              "model": label,
              "flops": flops,
              "caption": p["caption"],
              "seed": r.seed[0],
              "direction_ok": bool(score["direction_ok"]),
              "colour_ok": bool(score["colour_ok"]),
          }
      )
      column.append((v, score["direction_ok"] and score["colour_ok"]))
    columns.append((label, column))
  os.makedirs(out, exist_ok=True)
  _contact_sheet(os.path.join(out, "grid.png"), columns, requests, prompts)
  _grid_video(os.path.join(out, "grid.mp4"), columns, fps=s.fps)
  report = {
      "models": [m[0] for m in models],
      "flops": [m[1] for m in models],
      "compute_span": models[-1][1] / models[0][1],
      "steps": run["steps"],
      "guidance": run["guidance"],
      "tiles": scores,
      "accuracy_by_model": {
          label: float(np.mean([t["direction_ok"] and t["colour_ok"] for t in scores if t["model"] == label]))
          for label, _ in columns
      },
  }
  write_json(os.path.join(out, "grid.json"), report)
  return report


def _label(image, text):
  strip = Image.new("RGB", (image.width, LABEL_PX), (255, 255, 255))
  ImageDraw.Draw(strip).text((2, 1), text, fill=(0, 0, 0))
  out = Image.new("RGB", (image.width, image.height + LABEL_PX))
  out.paste(strip, (0, 0))
  out.paste(image, (0, LABEL_PX))
  return out


def _contact_sheet(path, columns, requests, prompts):
  """Rows (prompt, seed), columns models; a tile is SHEET_FRAMES frames side by side, labelled
  with the model and its verdict."""
  rows = []
  for i, r in enumerate(requests):
    tiles = []
    for label, column in columns:
      video, ok = column[i]
      picks = np.linspace(0, len(video) - 1, SHEET_FRAMES).round().astype(int)
      strip = Image.fromarray(np.concatenate([video[j] for j in picks], axis=1))
      tiles.append(
          _label(
              strip.resize((strip.width * 2, strip.height * 2), Image.NEAREST),
              f"{label} {'ok' if ok else 'x'}",
          )
      )
    row = np.concatenate([np.asarray(t) for t in tiles], axis=1)
    rows.append(
        np.asarray(_label(Image.fromarray(row), f"{prompts[r.seed[1]]['caption']}, seed {r.seed[0]}"))
    )
  with atomic_path(path) as tmp:
    Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG")


def _grid_video(path, columns, fps):
  """Every tile playing at once: rows (prompt, seed), columns models."""
  count = len(columns[0][1])
  frames = np.concatenate(
      [np.concatenate([column[i][0] for _, column in columns], axis=2) for i in range(count)], axis=1
  )
  write_video(path, frames, fps=fps)
