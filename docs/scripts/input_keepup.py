"""Does the DiT's input pipeline keep up with its train step? Times the batches of the training
data iterator itself (`dit_stage.dit_batches`: read, decode, resize to the budget, VAE-encode
where the data are clips, draw noise, mask strategy and caption, pack) on one host thread, from
prepared clips (`--clips`) or cached latents (`--latents`), without the step, and prints seconds
per batch beside the batches per second a step time needs (docs/benchmarks.md, "Input keep-up").

  python docs/scripts/input_keepup.py --workdir=runs/base --clips=runs/footage/clips --batches=20
  python docs/scripts/input_keepup.py --workdir=runs/base --latents=runs/footage/latents
"""

import argparse
import json
import time

import jax


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True, help="a run whose VAE and config are used")
  parser.add_argument("--clips", default="", help="a `sora-jax prepare` output")
  parser.add_argument("--latents", default="", help="a `sora-jax cache-latents` output")
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--row_length", type=int, default=None, help="tokens per row (default: the run's)")
  args = parser.parse_args()

  from sora_jax.generate import Pipeline
  from sora_jax.train.dit_stage import dit_batches, training_latents

  pipe = Pipeline.load(args.workdir, dit=False)
  config = pipe.config
  config.data.clips, config.data.latents = args.clips, args.latents
  if args.row_length:
    config.train.row_length = args.row_length
  started = time.perf_counter()
  data = training_latents(config, args.workdir, pipe.vae, pipe.vae_params)
  setup = time.perf_counter() - started  # clips: the latent statistics of the first 64 clips
  if hasattr(data[0], "read"):  # every record read afresh, as in a corpus far larger than the cache
    data[0].read.cache_clear()
  batches = dit_batches(config, data)
  next(batches)  # compilations (the VAE per clip shape) are not the steady state
  if hasattr(data[0], "read"):
    data[0].read.cache_clear()
  started = time.perf_counter()
  for _ in range(args.batches):
    next(batches)
  per_batch = (time.perf_counter() - started) / args.batches
  print(
      json.dumps(
          {
              "source": args.clips or args.latents,
              "rows": config.train.rows,
              "row_length": config.train.row_length,
              "setup_s": round(setup, 2),
              "seconds_per_batch": round(per_batch, 4),
              "batches_per_second_one_thread": round(1 / per_batch, 2),
              "device": jax.devices()[0].device_kind,
          },
          indent=1,
      )
  )


if __name__ == "__main__":
  main()
