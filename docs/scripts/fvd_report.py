"""FVD of a shapes run (docs/benchmarks.md, "FVD"): its samples against true shapes videos of the
same captions, and its VAE's reconstructions of prepared real clips against those clips.

  python docs/scripts/fvd_report.py --workdir=runs/base --clips=data/real_clips [--count=32]
"""

import argparse
import json

import numpy as np

from sora_jax.data.prepare import clip_source
from sora_jax.data.synthetic import ShapesSource, caption
from sora_jax.data.transforms import to_model_range, to_uint8
from sora_jax.evaluation.fvd import I3D, features, frechet_distance
from sora_jax.generate import Pipeline
from sora_jax.models.vae import decode_chunked, encode_chunked


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--clips", required=True, help="a `sora-jax prepare` output of real clips")
  parser.add_argument("--count", type=int, default=32)
  args = parser.parse_args()
  pipe = Pipeline.load(args.workdir)
  s = pipe.config.sample
  i3d = I3D()
  report = {}

  # Samples against the true videos of their captions (held-out seed: videos training never drew).
  config = pipe.config.copy_and_resolve_references()
  config.data.sizes, config.data.frames, config.seed = ((s.height, s.width),), (s.num_frames,), 12345
  source = ShapesSource.of_config(config, args.count)
  true = [source[i]["video"] for i in range(args.count)]
  captions = [caption(source[i]["spec"]) for i in range(args.count)]
  samples = pipe.generate(
      captions, num_frames=s.num_frames, height=s.height, width=s.width, steps=s.steps, guidance=s.guidance, seed=0
  )
  real = features(i3d, true)
  report["shapes_samples"] = {"fvd": frechet_distance(real, features(i3d, samples)), "videos": args.count}
  other = ShapesSource.of_config(config.copy_and_resolve_references(), 2 * args.count)
  report["shapes_true_vs_true"] = {
      "fvd": frechet_distance(real, features(i3d, [other[i]["video"] for i in range(args.count, 2 * args.count)])),
      "videos": args.count,
      "note": "a second draw of true videos: the floor this sample count allows",
  }

  # VAE reconstructions of real clips (each cropped to a multiple of 8 pixels).
  clips = clip_source(args.clips)
  originals, recons = [], []
  for i in range(len(clips)):
    video = clips[i]["video"]
    h, w = (video.shape[1] // 8) * 8, (video.shape[2] // 8) * 8
    video = video[:, :h, :w]
    x = to_model_range(video)[None]
    mean, _ = encode_chunked(pipe.vae, pipe.vae_params, x, chunk_latents=2)
    recon = decode_chunked(pipe.vae, pipe.vae_params, mean, chunk_latents=2)
    originals.append(video)
    recons.append(to_uint8(np.asarray(recon[0])))
  report["vae_reconstructions"] = {
      "fvd": frechet_distance(features(i3d, originals), features(i3d, recons)),
      "videos": len(originals),
  }
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
