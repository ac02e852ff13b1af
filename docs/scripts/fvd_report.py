"""FVD of a shapes run (docs/benchmarks.md, "FVD"): its samples against true shapes videos of the
same captions, and its VAE's reconstructions of prepared real clips against those clips.

  python docs/scripts/fvd_report.py --workdir=runs/base --clips=data/real_clips [--count=32]
  python docs/scripts/fvd_report.py --workdir=runs/video_vae --clips=data/real_clips --vae_only
"""

import argparse
import json

import numpy as np

from sora_jax.data.prepare import clip_source
from sora_jax.data.synthetic import ShapesSource, caption
from sora_jax.evaluation.fvd import I3D, features, frechet_distance
from sora_jax.generate import Pipeline, sample_settings
from sora_jax.evaluation.vae_eval import reconstruct


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--clips", required=True, help="a `sora-jax prepare` output of real clips")
  parser.add_argument("--count", type=int, default=32)
  parser.add_argument("--split", default="train", help="the clips' split")
  parser.add_argument(
      "--vae_only", action="store_true", help="only the VAE's reconstructions (a run without a DiT)"
  )
  args = parser.parse_args()
  pipe = Pipeline.load(args.workdir, dit=not args.vae_only)
  i3d = I3D()
  report = {}
  if not args.vae_only:
    report.update(samples_report(pipe, i3d, args.count))
  # VAE reconstructions of real clips, streamed as eval-vae does (cropped to multiples of 8 pixels).
  clips = clip_source(args.clips, args.split)
  originals, recons = [], []
  for i in range(len(clips)):
    pieces = list(reconstruct(pipe.vae, pipe.vae_params, clips[i]["video"], pipe.config.sample.chunk_latents))
    originals.append(np.concatenate([o for o, _ in pieces]))
    recons.append(np.concatenate([r for _, r in pieces]))
  report["vae_reconstructions"] = {
      "fvd": frechet_distance(features(i3d, originals), features(i3d, recons)),
      "videos": len(originals),
      "split": args.split,
  }
  print(json.dumps(report, indent=1))


def samples_report(pipe, i3d, count):
  """FVD of the run's samples against true shapes videos of their captions, and the floor."""
  s = pipe.config.sample
  report = {}

  # Samples against the true videos of their captions (held-out seed: videos training never drew).
  config = pipe.config.copy_and_resolve_references()
  config.data.sizes, config.data.frames, config.seed = ((s.height, s.width),), (s.num_frames,), 12345
  source = ShapesSource.of_config(config, count)
  true = [source[i]["video"] for i in range(count)]
  captions = [caption(source[i]["spec"]) for i in range(count)]
  samples = pipe.generate(captions, seed=0, **sample_settings(pipe.config))
  real = features(i3d, true)
  report["shapes_samples"] = {"fvd": frechet_distance(real, features(i3d, samples)), "videos": count}
  other = ShapesSource.of_config(config.copy_and_resolve_references(), 2 * count)
  report["shapes_true_vs_true"] = {
      "fvd": frechet_distance(real, features(i3d, [other[i]["video"] for i in range(count, 2 * count)])),
      "videos": count,
      "note": "a second draw of true videos: the floor this sample count allows",
  }

  return report


if __name__ == "__main__":
  main()
