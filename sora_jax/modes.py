"""Sora's prompting modes (report, "Prompting with images and videos") on one model.

Each mode is a `Plan`: a `Request` for `Pipeline.sample` (its given frames are conditions,
data/conditions.py) and how its sampled window becomes the output, with the input frames the
output keeps. Plans of different modes sample together in packed rows. A loop and a long video
need samples of their own first, so they are functions of the pipeline.
"""

import dataclasses
import numpy as np

from sora_jax.config import VAE_TEMPORAL, ConfigError
from sora_jax.data.conditions import check_edit_strength, latent_frame_of
from sora_jax.generate import Given, Request

EXTEND_DIRECTIONS = ("forward", "backward")


@dataclasses.dataclass(frozen=True)
class Plan:
  """A request, and its output: `before`, the sampled window's `keep` frames, then `after`.
  before / after are input videos the output holds: arrays, or iterables of frame chunks
  (the CLI streams long inputs from their files instead of holding them)."""

  request: Request
  keep: slice = None  # None: the whole window
  before: object = None
  after: object = None

  def chunks(self, window):
    """The output as frame arrays, in order (input files are read as they are iterated)."""
    for piece in (self.before, window[self.keep or slice(None)], self.after):
      if piece is not None:
        yield from [piece] if isinstance(piece, np.ndarray) else piece

  def output(self, window):
    return np.concatenate(list(self.chunks(window)))


def latent_frames(num_frames):
  return 1 + (num_frames - 1) // VAE_TEMPORAL


def head_frames(overlap):
  """Pixel frames of `overlap` latent frames at the start of a causal video: 1 + 4(k - 1)."""
  return 1 + VAE_TEMPORAL * (overlap - 1)


def _check_overlap(overlap, num_frames, sides=1):
  free = latent_frames(num_frames) - sides * overlap
  if overlap < 1 or free < 1:
    raise ConfigError(
        f"an overlap of {overlap} latent frame(s){' per side' if sides > 1 else ''} leaves "
        f"nothing to generate in {latent_frames(num_frames)} latent frames ({num_frames} frames): "
        "ask for more frames or a smaller --overlap"
    )


def _check_length(video, needed, what):
  if len(video) < needed:
    raise ConfigError(f"{what} has {len(video)} frames; this needs at least {needed} (--overlap)")


def image_plan(prompt, image, *, at, num_frames, height, width, seed=None):
  """Image-to-video with the picture at output frame `at` (0, -1 for the last, or any index)."""
  latent_frame_of(at, num_frames)
  return Plan(
      Request(prompt, num_frames, height, width, given=(Given(np.asarray(image)[None], at),), seed=seed)
  )


def extend_plan(prompt, video, *, direction, overlap, num_frames, height, width, seed=None, whole=None):
  """Continue `video` after its end (forward) or invent what came before its start (backward),
  sharing `overlap` latent frames with it. The output is the whole input (`whole`, default
  `video`: the input may be given as just the frames shared) with the new frames after
  (forward) or before (backward) it; the shared frames are the input's own pixels."""
  if direction not in EXTEND_DIRECTIONS:
    raise ConfigError(f"extend={direction!r}; choose from {EXTEND_DIRECTIONS}")
  _check_overlap(overlap, num_frames)
  whole = video if whole is None else whole
  request = lambda given: Request(prompt, num_frames, height, width, given=(given,), seed=seed)
  if direction == "forward":
    n = head_frames(overlap)
    _check_length(video, n, "the video to extend")
    return Plan(request(Given(video[-n:], 0)), keep=slice(n, None), before=whole)
  n = VAE_TEMPORAL * overlap
  _check_length(video, n, "the video to extend")
  return Plan(request(Given(video[:n], num_frames - n)), keep=slice(0, num_frames - n), after=whole)


def connect_plan(prompt, a, b, *, overlap, num_frames, height, width, seed=None, whole_a=None, whole_b=None):
  """A transition that starts where `a` ends and ends where `b` starts: a's last and b's first
  `overlap` latent frames are given. The output is a, the transition, then b (`whole_a`,
  `whole_b` where a and b are given as just their shared frames)."""
  _check_overlap(overlap, num_frames, sides=2)
  n_a, n_b = head_frames(overlap), VAE_TEMPORAL * overlap
  _check_length(a, n_a, "the first video to connect")
  _check_length(b, n_b, "the second video to connect")
  given = (Given(a[-n_a:], 0), Given(b[:n_b], num_frames - n_b))
  return Plan(
      Request(prompt, num_frames, height, width, given=given, seed=seed),
      keep=slice(n_a, num_frames - n_b),
      before=a if whole_a is None else whole_a,
      after=b if whole_b is None else whole_b,
  )


def edit_plan(prompt, video, *, strength, num_frames, height, width, seed=None):
  """SDEdit: the first num_frames of `video` noised to t = strength, denoised with `prompt`."""
  check_edit_strength(strength)
  _check_length(video, num_frames, "the video to edit")
  return Plan(
      Request(prompt, num_frames, height, width, edit=video[:num_frames], strength=strength, seed=seed)
  )


def sample_plans(pipe, plans, *, steps, guidance, seed):
  """Plans of any modes sampled together (they share packed rows) -> their output videos."""
  windows = pipe.sample([p.request for p in plans], steps=steps, guidance=guidance, seed=seed)
  return [p.output(w) for p, w in zip(plans, windows)]


def loop(pipe, prompts, *, num_frames, height, width, steps, guidance, seed, overlap=1):
  """Videos that play seamlessly on repeat: a text-to-video sample per prompt, then a transition
  from its end back to its start (`connect_plan` with the video on both sides). Each is the
  sample and the transition's new frames, so its last frame leads into its first.

  The transition is sampled without the caption: the way back usually runs against the motion
  the caption asks for (a shape that moves right must return left), and the caption then pulls
  it on past the end it is given (docs/benchmarks.md); the given ends lead it instead."""
  size = dict(num_frames=num_frames, height=height, width=width)
  args = dict(steps=steps, guidance=guidance, seed=seed)
  videos = pipe.sample([Request(p, **size, seed=(seed, i, 0)) for i, p in enumerate(prompts)], **args)
  plans = [connect_plan(None, v, v, overlap=overlap, **size, seed=(seed, i, 1)) for i, v in enumerate(videos)]
  windows = pipe.sample([plan.request for plan in plans], **args)
  return [np.concatenate([v, w[plan.keep]]) for v, w, plan in zip(videos, windows, plans)]  # not b again


def long_videos(
    pipe,
    prompts,
    *,
    total_frames,
    num_frames,
    height,
    width,
    steps,
    guidance,
    seed,
    overlap=2,
    first_frames=None,
):
  """Yield videos of `total_frames` frames chunk by chunk (a list of new frames per prompt): a
  text-to-video sample (image-to-video from `first_frames`, uint8 [H, W, 3] per prompt, if
  given), then forward extensions, each given the last `overlap` latent frames so far. Only
  those frames are kept between chunks, so memory stays flat in the length."""
  _check_overlap(overlap, num_frames)
  if total_frames < 1:
    raise ConfigError(f"a long video needs at least 1 frame, got {total_frames}")
  if first_frames is not None and len(first_frames) != len(prompts):
    raise ConfigError(f"{len(first_frames)} first frames for {len(prompts)} prompts: give one per prompt")
  size = dict(num_frames=num_frames, height=height, width=width)
  n = head_frames(overlap)
  tails, emitted, chunk = None, 0, 0
  while emitted < total_frames:
    if tails is None:
      requests = [
          Request(p, **size, seed=(seed, i, chunk))
          if first_frames is None
          else image_plan(p, first_frames[i], at=0, **size, seed=(seed, i, chunk)).request
          for i, p in enumerate(prompts)
      ]
      new_from = 0
    else:
      requests = [
          extend_plan(p, tail, direction="forward", overlap=overlap, **size, seed=(seed, i, chunk)).request
          for i, (p, tail) in enumerate(zip(prompts, tails))
      ]
      new_from = n
    windows = pipe.sample(requests, steps=steps, guidance=guidance, seed=seed)
    new = [w[new_from : new_from + total_frames - emitted] for w in windows]
    emitted += len(new[0])
    tails = [w[-n:] for w in windows]
    chunk += 1
    yield new
