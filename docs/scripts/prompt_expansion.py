"""What the rule-based prompt expander changes (docs/benchmarks.md, "Prompt expansion"): the
held-out prompts written tersely ("red circle up-right"), sampled as typed and after
`--expand_prompt=rules`, scored by the shapes evaluator over a few seeds.

  python docs/scripts/prompt_expansion.py --workdir=runs/shapes [--seeds=0,1,2]
"""

import argparse
import json

import numpy as np

from sora_jax.evaluation.shapes import analyse_video, eval_prompts
from sora_jax.generate import Pipeline, sample_settings
from sora_jax.prompts import rule_expand


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--seeds", default="0,1,2")
  args = parser.parse_args()
  pipe = Pipeline.load(args.workdir)
  s = pipe.config.sample
  prompts = eval_prompts(num_frames=s.num_frames, height=s.height, width=s.width)
  terse = [f"{p['colour']} {p['shape']} {p['direction']}" for p in prompts]
  report = {}
  for name, captions in (("terse", terse), ("expanded", [rule_expand(t) for t in terse])):
    scores = {"colour": [], "direction": [], "shape": []}
    for seed in map(int, args.seeds.split(",")):
      videos = pipe.generate(captions, seed=seed, **sample_settings(pipe.config))
      for p, v in zip(prompts, videos):
        r = analyse_video(v, p["colour"], p["direction"], p["shape"])
        for k in scores:
          scores[k].append(bool(r[f"{k}_ok"]))
    report[name] = {"example": captions[0], **{k: float(np.mean(v)) for k, v in scores.items()}}
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
