"""`sora-jax` command line: train, sample, eval.

  sora-jax train  --config=configs/shapes.py --workdir=DIR [--config.train.steps=100 ...]
  sora-jax sample --workdir=DIR --prompt="a red circle moves to the right" --num_frames=17
                  --height=64 --width=96 --steps=30 --guidance=4 --seed=0 --output=out.mp4
  sora-jax eval   --workdir=DIR
"""
import json
import os
import sys

from absl import flags
from ml_collections import config_flags

from sora_jax.config import ConfigError
from sora_jax.data.video_io import VideoReadError
from sora_jax.generate import CheckpointMissing

COMMANDS = ("train", "sample", "eval")

FLAGS = flags.FlagValues()
config_flags.DEFINE_config_file("config", None, "experiment config file (configs/<name>.py[:variant])",
                                 flag_values=FLAGS)
flags.DEFINE_string("workdir", None, "run directory: checkpoints, TensorBoard events, samples", flag_values=FLAGS)
flags.DEFINE_multi_string("prompt", [], "caption(s) to sample; repeat for several", flag_values=FLAGS)
flags.DEFINE_integer("num_frames", None, "frames to sample (1 + 4k); default from the config", flag_values=FLAGS)
flags.DEFINE_integer("height", None, "pixel height; default from the config", flag_values=FLAGS)
flags.DEFINE_integer("width", None, "pixel width; default from the config", flag_values=FLAGS)
flags.DEFINE_integer("steps", None, "sampler steps; default from the config", flag_values=FLAGS)
flags.DEFINE_float("guidance", None, "classifier-free guidance scale; default from the config", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=FLAGS)
flags.DEFINE_string("output", None, "output .mp4 / .gif / .png (png for 1 frame)", flag_values=FLAGS)


class UsageError(ValueError):
  pass


def _require(name):
  value = getattr(FLAGS, name)
  if value is None:
    raise UsageError(f"--{name} is required")
  return value


def _sample_args(config):
  s = config.sample
  pick = lambda flag, default: default if getattr(FLAGS, flag) is None else getattr(FLAGS, flag)
  return dict(num_frames=pick("num_frames", s.num_frames), height=pick("height", s.height),
              width=pick("width", s.width), steps=pick("steps", s.steps), guidance=pick("guidance", s.guidance))


def cmd_train():
  from sora_jax import pipeline
  config, workdir = _require("config"), _require("workdir")
  summary = pipeline.train_and_evaluate(config, workdir)
  print(json.dumps(summary, indent=1))


def cmd_sample():
  from sora_jax.data.video_io import write_video
  from sora_jax.generate import Pipeline
  workdir, output = _require("workdir"), _require("output")
  if not FLAGS.prompt:
    raise UsageError("--prompt is required (repeat it for several prompts)")
  pipe = Pipeline.load(workdir)
  videos = pipe.generate(FLAGS.prompt, seed=FLAGS.seed, **_sample_args(pipe.config))
  stem, ext = os.path.splitext(output)
  paths = [output] if len(videos) == 1 else [f"{stem}_{i}{ext}" for i in range(len(videos))]
  for path, video in zip(paths, videos):
    write_video(path, video, fps=pipe.config.sample.fps)
    print(path)


def cmd_eval():
  from sora_jax import pipeline
  from sora_jax.generate import Pipeline
  workdir = _require("workdir")
  pipe = Pipeline.load(workdir)
  print(json.dumps(pipeline.evaluate(pipe, workdir, seed=FLAGS.seed, **_sample_args(pipe.config)), indent=1))


def main(argv):
  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    raise UsageError(str(e).splitlines()[0]) from None
  if len(rest) != 2 or rest[1] not in COMMANDS:
    raise UsageError(f"give one command from {COMMANDS}, e.g. `sora-jax train --config=configs/shapes.py --workdir=runs/shapes`")
  if FLAGS["config"].present:
    from sora_jax.config import validate
    validate(FLAGS.config)
  {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval}[rest[1]]()


def run():
  try:
    main(sys.argv)
  except (UsageError, ConfigError, CheckpointMissing, VideoReadError) as e:
    print(f"sora-jax: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run()
