"""A fine-tune's samples side by side: per prompt, a row of frames from the base alone and a row
with the adapter (the videos `sora-jax finetune` writes to DIR/samples/{base,adapter}/).

  python docs/scripts/adapter_figure.py --workdir=runs/zoom --output=docs/figures/motion_lora.png
"""

import argparse
import pathlib

import numpy as np

from sora_jax.data.video_io import read_video, write_video


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True, help="a `sora-jax finetune` folder")
  parser.add_argument("--output", required=True, help="a .png")
  parser.add_argument("--prompts", type=int, default=4, help="the first N held-out prompts")
  parser.add_argument("--frames", type=int, default=5, help="frames per row, spread over the video")
  parser.add_argument("--scale", type=int, default=2, help="pixel repeat, so small videos show")
  args = parser.parse_args()
  folder = pathlib.Path(args.workdir) / "samples"
  rows = []
  for path in sorted((folder / "base").glob("*.mp4"))[: args.prompts]:
    for kind in ("base", "adapter"):
      video = read_video(folder / kind / path.name)
      picks = np.linspace(0, len(video) - 1, args.frames).round().astype(int)
      gap = np.full((video.shape[1], 2, 3), 255, np.uint8)
      row = np.concatenate([np.concatenate([f, gap], axis=1) for f in video[picks]], axis=1)
      rows += [row, np.full((2 if kind == "base" else 6, row.shape[1], 3), 255, np.uint8)]
  picture = np.concatenate(rows).repeat(args.scale, 0).repeat(args.scale, 1)
  write_video(args.output, picture[None])
  print(args.output)


if __name__ == "__main__":
  main()
