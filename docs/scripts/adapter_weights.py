"""A fine-tune's evaluation (finetune_eval.json's) at several adapter weights: how the share of
samples showing the learned camera motion, and colour and direction, move with --adapter=DIR:W.

  python docs/scripts/adapter_weights.py --base=runs/factorized --adapter=runs/zoom --weights=1,1.5,2
"""

import argparse
import json
import tempfile

from sora_jax.adapters import apply_adapters
from sora_jax.generate import Pipeline
from sora_jax.train.finetune_stage import evaluate_adapter, saved_config


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--base", required=True)
  parser.add_argument("--adapter", required=True)
  parser.add_argument("--weights", default="1,1.5,2")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--guidance", type=float, default=None, help="default: the run's sample.guidance")
  args = parser.parse_args()
  base = Pipeline.load(args.base)
  # The fine-tune's own config (the base's with its keys laid over): its data.colours decide
  # the prompts' colours, e.g. a new-colour adapter is scored on its new colour.
  config = saved_config(base.config, args.adapter)
  config.sample.adapter_eval_seeds = args.seeds
  if args.guidance is not None:
    config.sample.guidance = args.guidance
  report = {}
  for weight in [float(w) for w in args.weights.split(",")]:
    adapted = apply_adapters(base, [f"{args.adapter}:{weight}"])
    with tempfile.TemporaryDirectory() as scratch:  # the sample videos are not kept
      scores = evaluate_adapter(base, adapted, scratch, config)
    report[weight] = scores["adapter"]
    report["base"] = scores["base"]
    if "base_filmed" in scores:  # a camera adapter: a perfect one's share on this base
      report["base_filmed"] = scores["base_filmed"]
    print(weight, json.dumps(scores["adapter"]), flush=True)
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
