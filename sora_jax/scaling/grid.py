"""`sora-jax grid --sweep=DIR`: the same prompts and seeds sampled by every model of a sweep, as
the Sora report shows base, 4x and 32x compute side by side (and the DiT paper its models).

Every tile of a (prompt, seed) row starts from the same initial latent whatever the model
(`Request.seed` = (seed, prompt index): the noise depends on it and the latent shape only,
`generate.request_noise`), with the same sampler, steps and guidance. Columns are the sweep's
finished cells by training FLOPs, each labelled with them; every tile is scored by the shapes
evaluator. Writes DIR/report/grid.png (a contact sheet: a few frames per tile), grid.mp4 (every
tile playing) and grid.json (the scores).
"""

import os

import numpy as np
from PIL import Image, ImageDraw

from sora_jax.config import ConfigError
from sora_jax.data.video_io import write_video
from sora_jax.evaluation.shapes import analyse_video, eval_prompts
from sora_jax.files import atomic_path, write_json
from sora_jax.generate import Pipeline, Request
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


def models_of(sweep_dir, max_models):
  """Finished cells' (label, folder, flops), by FLOPs; at most max_models spread over the range."""
  done = sorted((s for s in read_cells_status(sweep_dir) if s["status"] == "done"), key=lambda s: s["flops"])
  if not done:
    raise ConfigError(f"{sweep_dir}: no finished cells to sample; run `sora-jax sweep` first")
  if len(done) > max_models:
    done = [done[i] for i in np.linspace(0, len(done) - 1, max_models).round().astype(int)]
  return [
      (f"d{s['depth']} {s['flops']:.2g} FLOPs", os.path.join(sweep_dir, "cells", s["hash"]), s["flops"])
      for s in done
  ]


def _label(image, text):
  strip = Image.new("RGB", (image.width, LABEL_PX), (255, 255, 255))
  ImageDraw.Draw(strip).text((2, 1), text, fill=(0, 0, 0))
  out = Image.new("RGB", (image.width, image.height + LABEL_PX))
  out.paste(strip, (0, 0))
  out.paste(image, (0, LABEL_PX))
  return out


def sample_grid(sweep_dir, *, num_prompts=4, seeds=(0, 1), max_models=6, steps=None, guidance=None):
  """Sample the grid and write DIR/report/grid.{png,mp4,json}; returns the scores."""
  models = models_of(sweep_dir, max_models)
  first = Pipeline.load(models[0][1])
  s = first.config.sample
  prompts = eval_prompts(num_frames=s.num_frames, height=s.height, width=s.width)[:num_prompts]
  requests = grid_requests(prompts, seeds, s.num_frames, s.height, s.width)
  run = {"steps": steps or s.steps, "guidance": guidance or s.guidance, "seed": 0}
  columns, scores = [], []
  for label, folder, flops in models:
    pipe = first if folder == models[0][1] else Pipeline.load(folder)
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
  out = os.path.join(sweep_dir, "report")
  _contact_sheet(os.path.join(out, "grid.png"), columns, requests, prompts)
  _grid_video(os.path.join(out, "grid.mp4"), columns, fps=s.fps)
  report = {
      "models": [m[0] for m in models],
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
