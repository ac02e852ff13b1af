"""A LoRA fine-tune's flow-matching loss on its own clips, base against base + adapter at several
weights, on the same batches, noise and times: how much of the new data the adapter has learned,
apart from how samples look.

  python docs/scripts/adapter_loss.py --base=runs/factorized --adapter=runs/zoom2000 --weights=1,2
"""

import argparse
import json
import os
import pickle

import jax
import numpy as np

from sora_jax.adapters import load_adapter
from sora_jax.generate import Pipeline
from sora_jax.train.dit_stage import dit_batches, dit_training, shapes_data
from sora_jax.train.finetune_stage import saved_config


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--base", required=True)
  parser.add_argument(
      "--adapter", required=True, help="a LoRA fine-tune on the shapes (its latent_cache.pkl)"
  )
  parser.add_argument("--weights", default="1")
  parser.add_argument("--batches", type=int, default=30)
  args = parser.parse_args()
  base = Pipeline.load(args.base)
  config = saved_config(base.config, args.adapter)
  adapter, _, extra = load_adapter(args.adapter)
  with open(os.path.join(args.adapter, "latent_cache.pkl"), "rb") as f:
    data = shapes_data(config, pickle.load(f))
  data = (data[0], data[1], base.latent_stats)  # the base's standardisation, as the fine-tune
  training = dit_training(config)
  loss = jax.jit(lambda params, batch, rng: training.loss_fn(params, batch, rng)[0])
  weights = [0.0] + [float(w) for w in args.weights.split(",")]
  params = {w: adapter.merged(base.dit_params, extra, w) for w in weights}
  losses = {w: [] for w in weights}
  batches = iter(dit_batches(config, data))
  for i in range(args.batches):
    batch = {k: v for k, v in next(batches)[0].items() if k in training.batch_shapes}
    for w in weights:
      losses[w].append(float(loss(params[w], batch, jax.random.key(1000 + i))))
  report = {}
  for w in weights:
    diff = np.array(losses[w]) - np.array(losses[0.0])
    report[w] = {
        "loss": float(np.mean(losses[w])),
        "vs_base": float(diff.mean()),
        "stderr": float(diff.std() / np.sqrt(len(diff))),
    }
    print(w, json.dumps(report[w]), flush=True)


if __name__ == "__main__":
  main()
