"""A T5 v1.1 encoder folder at a published size with random weights, for timing the frozen-encoder
path without downloading anything (docs/benchmarks.md, "Cached text embeddings"). The tokenizer is
the test fixture's: its ids are a subset of the model's vocabulary, so every caption encodes.
--config_only writes no weights: enough for `sora-jax aot`, which compiles from shapes alone.

  python docs/scripts/random_t5.py --size=base --output=/tmp/t5_base
  sora-jax bench --config=configs/shapes.py:t5 --config.model.text.path=/tmp/t5_base
  python docs/scripts/random_t5.py --size=xxl --config_only --output=/tmp/t5_xxl
"""

import argparse
import json
import os
import shutil

import jax

from sora_jax.models.t5 import T5Config, T5Encoder, write_t5_folder

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "t5", "t5_tiny")
# google/t5-v1_1-{small,base,large,xl}'s encoder shapes (d_model, d_kv, d_ff, layers, heads).
SIZES = {
    "small": (512, 64, 1024, 8, 6),
    "base": (768, 64, 2048, 12, 12),
    "large": (1024, 64, 2816, 24, 16),
    "xl": (2048, 64, 5120, 24, 32),
    "xxl": (4096, 64, 10240, 24, 64),
}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", choices=sorted(SIZES), default="base")
  parser.add_argument("--output", required=True)
  parser.add_argument("--config_only", action="store_true", help="config.json and tokenizer, no weights")
  args = parser.parse_args()
  d_model, d_kv, d_ff, layers, heads = SIZES[args.size]
  raw = {
      "model_type": "t5",
      "architectures": ["T5EncoderModel"],
      "vocab_size": 32128,
      "d_model": d_model,
      "d_kv": d_kv,
      "d_ff": d_ff,
      "num_layers": layers,
      "num_heads": heads,
      "feed_forward_proj": "gated-gelu",
      "relative_attention_num_buckets": 32,
      "relative_attention_max_distance": 128,
      "layer_norm_epsilon": 1e-6,
      "pad_token_id": 0,
      "eos_token_id": 1,
  }
  os.makedirs(args.output)
  with open(os.path.join(args.output, "config.json"), "w") as f:
    json.dump(raw, f, indent=1)
  config = T5Config.from_folder(args.output)
  if args.config_only:
    shutil.copyfile(os.path.join(FIXTURE, "spiece.model"), os.path.join(args.output, "spiece.model"))
    print(f"{args.output}: T5 v1.1 {args.size} config.json and tokenizer, no weights")
    return
  params = jax.jit(T5Encoder(config).init)(jax.random.key(0), jax.numpy.zeros((1, 4), jax.numpy.int32))["params"]
  write_t5_folder(args.output, params, FIXTURE, "float32")
  with open(os.path.join(args.output, "config.json"), "w") as f:  # ours, not the fixture's copy
    json.dump(raw, f, indent=1)
  count = sum(x.size for x in jax.tree.leaves(params))
  print(f"{args.output}: random T5 v1.1 {args.size} encoder, {count:,} parameters")


if __name__ == "__main__":
  main()
