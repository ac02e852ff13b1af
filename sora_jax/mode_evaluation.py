"""Score every prompting mode on the held-out shapes prompts (`sora-jax eval --modes=...`).

Each mode is given parts of each prompt's true clip (its track centred, as `opening_frames`
renders it) and scored from shape centroids (evaluation/modes.py). The single-pass modes sample
together in packed rows; a loop and a long video sample in passes of their own.
"""

import dataclasses

import numpy as np

from sora_jax import modes
from sora_jax.config import ConfigError
from sora_jax.data.synthetic import COLOURS, SPEEDS, render, track
from sora_jax.evaluation.shapes import short_caption, true_clip, true_spec
from sora_jax.evaluation import modes as scores

MODES = ("extend_forward", "extend_backward", "image_last", "connect", "loop", "sdedit", "long")
# What each mode's summary averages (evaluation/modes.py keys), beside the sample count.
SUMMARY_KEYS = {
    "extend_forward": ("direction_ok", "colour_ok", "seam_ok", "seam_ratio"),
    "extend_backward": ("direction_ok", "colour_ok", "seam_ok", "seam_ratio"),
    "image_last": ("end_ok", "end_error", "direction_ok", "colour_ok"),
    "connect": ("start_ok", "start_error", "end_ok", "end_error", "max_step_ratio"),
    "loop": ("ok", "wrap_ok", "moves", "wrap_ratio"),
    "sdedit": ("layout_ok_0.3", "layout_error_0.3", "colour_ok_0.8"),
    "long": ("colour_all", "direction_all"),
}
SDEDIT_STRENGTHS = (0.3, 0.8)
LONG_LENGTH = 4  # long videos are this many times the sampled length
# A shape that keeps moving for 4x the training length leaves any training-size frame at the
# quick speed, and at any speed when it moves diagonally (docs/benchmarks.md). Long videos are
# scored on the held-out prompts that move along an axis, slowly, on a frame long that way, from
# the true first frame of their whole (centred) track, so that the track fits in the frame.
LONG_SPEED = "slowly"
LONG_SIZES = {"right": (32, 64), "left": (32, 64), "up": (64, 32), "down": (64, 32)}


def parse_modes(text):
  """'all' or a comma-separated subset of MODES -> tuple; one line naming an unknown mode."""
  if text in ("", "none"):
    return ()
  names = MODES if text == "all" else tuple(m.strip() for m in text.split(","))
  for name in names:
    if name not in MODES:
      raise ConfigError(f"modes has {name!r}; choose from {MODES}, 'all' or 'none'")
  return names


def evaluate_modes(pipe, prompts, names, *, steps, guidance, seed):
  """{mode: {"summary": ..., "results": [...]}} for the held-out `prompts` (eval_prompts)."""
  p0 = prompts[0]
  num_frames, height, width = p0["num_frames"], p0["height"], p0["width"]
  size = dict(num_frames=num_frames, height=height, width=width)
  args = dict(steps=steps, guidance=guidance, seed=seed)
  latent = modes.latent_frames(num_frames)
  forward_k, backward_k = (latent + 1) // 2, latent // 2  # the given half of each clip
  speed = SPEEDS["quickly"] * min(height, width)
  clips = [true_clip(p, i) for i, p in enumerate(prompts)]
  out = {}

  # Single-pass modes: one packed sampling call for all of them.
  plans, jobs = [], []
  for i, (p, clip) in enumerate(zip(prompts, clips)):
    caption = p["caption"]
    if "extend_forward" in names:
      given = modes.head_frames(forward_k)
      plans.append(modes.extend_plan(caption, clip[:given], direction="forward", overlap=forward_k, **size))
      jobs.append(
          (
              "extend_forward",
              lambda v, p=p, g=given: scores.extension_scores(
                  v, p["colour"], p["direction"], given=slice(0, g), speed_px=speed
              ),
          )
      )
    if "extend_backward" in names:
      start = num_frames - 4 * backward_k
      plans.append(modes.extend_plan(caption, clip[start:], direction="backward", overlap=backward_k, **size))
      jobs.append(
          (
              "extend_backward",
              lambda v, p=p, s=start: scores.extension_scores(
                  v, p["colour"], p["direction"], given=slice(s, num_frames), speed_px=speed
              ),
          )
      )
    if "image_last" in names:
      plans.append(modes.image_plan(caption, clip[-1], at=-1, **size))
      jobs.append(
          (
              "image_last",
              lambda v, p=p, c=clip: scores.end_position_scores(v, p["colour"], p["direction"], image=c[-1]),
          )
      )
    if "connect" in names:
      # From the clip's first frame to its last group: the generated frames between must start
      # next to a's last position and arrive next to b's first.
      tail = num_frames - 4
      plans.append(modes.connect_plan(caption, clip[:1], clip[tail:], overlap=1, **size))
      jobs.append(
          (
              "connect",
              lambda v, p=p, c=clip, t=tail: scores.connect_scores(
                  v[1:t], p["colour"], p["colour"], a_last=c[0], b_first=c[t]
              ),
          )
      )
    if "sdedit" in names:
      # The source: the same track in another colour; the caption asks for the prompt's colour.
      others = [c for c in COLOURS if c != p["colour"]]
      source_colour = others[i % len(others)]
      source = true_clip(p, i, colour=source_colour)
      for strength in SDEDIT_STRENGTHS:
        plans.append(modes.edit_plan(caption, source, strength=strength, **size))
        jobs.append(
            (
                "sdedit",
                lambda v, p=p, s=source, sc=source_colour, st=strength: {
                    f"{k}_{st}": x for k, x in scores.sdedit_scores(s, v, sc, p["colour"]).items()
                },
            )
        )
  results = {}
  if plans:
    for (name, score), plan, video in zip(jobs, plans, modes.sample_plans(pipe, plans, **args)):
      results.setdefault(name, []).append(score(video) | {"caption": plan.request.prompt})
  if "sdedit" in results:  # one entry per prompt with both strengths
    pairs = results["sdedit"]
    results["sdedit"] = [a | b for a, b in zip(pairs[::2], pairs[1::2])]

  if "loop" in names:
    looped = modes.loop(pipe, [p["caption"] for p in prompts], **size, **args)
    results["loop"] = [
        scores.loop_scores(v, p["colour"]) | {"caption": p["caption"]} for p, v in zip(prompts, looped)
    ]
  if "long" in names:
    results["long"] = _long_results(pipe, prompts, num_frames, args)
  for name in names:
    out[name] = {
        "summary": scores.summarise_mode(results[name], SUMMARY_KEYS[name]),
        "results": results[name],
    }
  return out


def long_prompts(prompts, num_frames):
  """The held-out prompts whose LONG_LENGTH-times track fits in a frame of LONG_SIZES, as
  (prompt at its long size and speed, its index among `prompts`, its true long track's spec)."""
  chosen = []
  for i, p in enumerate(prompts):
    if p["direction"] not in LONG_SIZES:
      continue
    height, width = LONG_SIZES[p["direction"]]
    caption = f"{short_caption(p['colour'], p['shape'], p['direction'])} {LONG_SPEED}"
    long = p | {"height": height, "width": width, "caption": caption}
    spec = true_spec(long, i, num_frames=LONG_LENGTH * num_frames, speed=LONG_SPEED)
    centre = track(spec)
    if (centre - spec.radius).min() < 0 or ((centre + spec.radius) > np.array([height, width]) - 1).any():
      raise ValueError(f"the long track of {caption!r} does not fit in {height}x{width}")
    chosen.append((long, i, spec))
  return chosen


def _long_results(pipe, prompts, num_frames, args):
  """Long videos from each chosen prompt's true first frame, one sampling call per frame size."""
  chosen = long_prompts(prompts, num_frames)
  results = {}
  for height, width in sorted({(p["height"], p["width"]) for p, _, _ in chosen}):
    group = [(p, i, spec) for p, i, spec in chosen if (p["height"], p["width"]) == (height, width)]
    firsts = [render(dataclasses.replace(spec, num_frames=1))[0] for _, _, spec in group]  # its frame 0
    chunks = list(
        modes.long_videos(
            pipe,
            [p["caption"] for p, _, _ in group],
            total_frames=LONG_LENGTH * num_frames,
            num_frames=num_frames,
            height=height,
            width=width,
            first_frames=firsts,
            **args,
        )
    )
    for j, (p, i, _) in enumerate(group):
      video = np.concatenate([c[j] for c in chunks])
      scored = scores.chunk_scores(video, p["colour"], p["direction"], chunk_frames=num_frames)
      results[i] = scored | {"caption": p["caption"]}
  return [results[i] for i in sorted(results)]
