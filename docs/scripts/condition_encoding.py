"""How far given pixels land from their in-place latents (docs/design.md, "Conditioning on given
frames"): error of each way to encode a clip or image placed after frame 0, against encoding the
whole true video, in units of the latents' per-channel spread.

  python docs/scripts/condition_encoding.py --workdir=runs/shapes [--videos=64]
"""

import argparse
import json

import numpy as np

from sora_jax.data.conditions import encode_given
from sora_jax.data.latents import encode_videos
from sora_jax.data.synthetic import ShapesSource
from sora_jax.generate import Pipeline


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--videos", type=int, default=64)
  args = parser.parse_args()
  pipe = Pipeline.load(args.workdir, dit=False)
  source = ShapesSource(1234, frames=(17,), sizes=((48, 48),))
  videos = [source[i]["video"] for i in range(args.videos)]
  raw = lambda v: encode_videos(pipe.vae, pipe.vae_params, [v], batch_size=1)[0][0]  # posterior means
  whole = [raw(v) for v in videos]
  spread = np.concatenate([w.reshape(-1, w.shape[-1]) for w in whole]).std(0)
  err = lambda a, b: float(np.sqrt(np.mean(np.square((a - b) / spread))))

  cases = {}
  # Head: frames 0..8 are latent frames 0..2 of a causal video: encoded alone, exactly.
  cases["head clip, frames 0-8 -> latents 0-2"] = float(
      np.mean([err(encode_given(raw, v[:9], 0, 17).latents, w[:3]) for v, w in zip(videos, whole)])
  )
  for groups in (0, 1, 2, 4):
    cases[f"tail clip, frames 9-16 -> latents 3-4, window of {groups} still groups"] = float(
        np.mean(
            [
                err(encode_given(raw, v[9:], 9, 17, window_groups=groups).latents, w[3:])
                for v, w in zip(videos, whole)
            ]
        )
    )
    cases[f"last group, frames 13-16 -> latent 4, window of {groups} still groups"] = float(
        np.mean(
            [
                err(encode_given(raw, v[13:], 13, 17, window_groups=groups).latents, w[4:])
                for v, w in zip(videos, whole)
            ]
        )
    )
  cases["last group encoded as its own causal video (frame 13 alone, then 14-16 + copy)"] = float(
      np.mean([err(raw(np.concatenate([v[13:], v[16:]]))[1:], w[4:]) for v, w in zip(videos, whole)])
  )
  cases["last frame as a still group (window 2) -> latent 4"] = float(
      np.mean([err(encode_given(raw, v[16:], 16, 17).latents, w[4:]) for v, w in zip(videos, whole)])
  )
  cases["last frame encoded as a frame 0 -> latent 4"] = float(
      np.mean([err(raw(v[16:]), w[4:]) for v, w in zip(videos, whole)])
  )
  cases["middle frame 8 as a still group (window 2) -> latent 2"] = float(
      np.mean([err(encode_given(raw, v[8:9], 8, 17).latents, w[2:3]) for v, w in zip(videos, whole)])
  )
  cases["reference: latent 4 of another video of the set"] = float(
      np.mean([err(whole[(i + 1) % len(whole)][4:], w[4:]) for i, w in enumerate(whole)])
  )
  print(json.dumps(cases, indent=1))


if __name__ == "__main__":
  main()
