"""One sample per prompting mode, frames side by side, as the PNG in the README.

  python docs/scripts/mode_figures.py --workdir=runs/shapes --output=docs/figures/modes.png

Each row is one mode's output video (every `--every`-th frame), given frames outlined in white.
"""

import argparse

from sora_jax import platforms

platforms.skip_absent_tpu()  # before jax is imported: no libtpu start-up noise without a TPU

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from sora_jax import modes  # noqa: E402
from sora_jax.data.synthetic import make_spec, render  # noqa: E402
from sora_jax.generate import Pipeline, Request  # noqa: E402
from sora_jax.mode_evaluation import LONG_SIZES, LONG_SPEED  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--output", required=True)
  parser.add_argument("--every", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  pipe = Pipeline.load(args.workdir)
  s = pipe.config.sample
  size = dict(num_frames=s.num_frames, height=s.height, width=s.width)
  run = dict(steps=s.steps, guidance=s.guidance, seed=args.seed)
  caption = "a red circle moves to the right"
  clip = render(make_spec("red", "circle", "right", **size))
  blue = render(make_spec("blue", "circle", "right", **size))
  n = s.num_frames
  rows = [  # (label, plan, given output frames)
      ("text-to-video", modes.Plan(Request(caption, **size)), ()),
      ("image at the last frame", modes.image_plan(caption, clip[-1], at=-1, **size), (n - 1,)),
      (
          "extend forward (9 given)",
          modes.extend_plan(caption, clip[:9], direction="forward", overlap=3, **size),
          range(9),
      ),
      (
          "extend backward (8 given)",
          modes.extend_plan(caption, clip[9:], direction="backward", overlap=2, **size),
          range(9, n),
      ),
      (
          "connect",
          modes.connect_plan(caption, clip[:1], clip[n - 4 :], overlap=1, **size),
          (0, n - 4, n - 3, n - 2, n - 1),
      ),
      ("SDEdit 0.8 of a blue circle", modes.edit_plan(caption, blue, strength=0.8, **size), ()),
  ]
  videos = modes.sample_plans(pipe, [plan for _, plan, _ in rows], **run)
  labelled = [(label, video, set(given)) for (label, _, given), video in zip(rows, videos)]
  (looped,) = modes.loop(pipe, [caption], **size, **run)
  labelled.append(("loop (then back to frame 0)", looped, set()))
  # As the evaluation scores long videos: slowly, on a frame long in the motion's axis, from the
  # first frame of a track that fits (mode_evaluation.LONG_SIZES).
  height, width = LONG_SIZES["right"]
  long = dict(num_frames=n, height=height, width=width)
  start = render(
      make_spec("red", "circle", "right", num_frames=4 * n, height=height, width=width, speed=LONG_SPEED)
  )[0]
  chunks = list(
      modes.long_videos(
          pipe, [f"{caption} {LONG_SPEED}"], total_frames=4 * n, first_frames=[start], **long, **run
      )
  )
  labelled.append(("long video, 4x (every 4th frame)", np.concatenate([c[0] for c in chunks])[::2], {0}))
  Image.fromarray(grid(labelled, args.every)).save(args.output)
  print(args.output)


def grid(rows, every, label_width=190, scale=2):
  """Rows of frames (every `every`-th) with a text label on the left; given frames outlined.
  Rows may differ in frame size; each is as tall as its frames."""
  sizes = [(v.shape[1] * scale, v.shape[2] * scale) for _, v, _ in rows]
  width = max(label_width + len(range(0, len(v), every)) * (w + 2) for (_, v, _), (_, w) in zip(rows, sizes))
  canvas = Image.new("RGB", (width, sum(h + 4 for h, _ in sizes)), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  y = 2
  for (label, video, given), (h, w) in zip(rows, sizes):
    draw.text((4, y + h // 2 - 6), label, fill=(0, 0, 0))
    for c, f in enumerate(range(0, len(video), every)):
      x = label_width + c * (w + 2)
      canvas.paste(Image.fromarray(video[f]).resize((w, h), Image.NEAREST), (x, y))
      if f in given:
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 255, 255), width=2)
    y += h + 4
  return np.asarray(canvas)


if __name__ == "__main__":
  main()
