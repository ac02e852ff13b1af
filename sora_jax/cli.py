"""`sora-jax` command line: train, sample, eval.

  sora-jax train  --config=configs/shapes.py --workdir=DIR [--config.train.steps=100 ...]
  sora-jax sample --workdir=DIR --prompt="a red circle moves to the right" --num_frames=17
                  --height=64 --width=96 --steps=30 --guidance=4 --seed=0 --output=out.mp4
  sora-jax eval   --workdir=DIR
  sora-jax aot    --config=configs/sora_8b.py:v5p --topology=v5p-256 [--num_slices=2]
  sora-jax bench  --config=configs/shapes.py [--bench_steps=10 --peak_tflops=... --unpacked]
  sora-jax prepare --input=DIR|list.csv|list.jsonl|shapes:N --output=DIR [--fps=8 --clip_frames=17 --clip_stride=17]
  sora-jax cache-latents --workdir=DIR --input=PREPARED --output=LATENTS   (then --config.data.latents=LATENTS)
"""
import json
import os
import re
import sys

from absl import flags
from ml_collections import config_flags

from sora_jax.config import ConfigError
from sora_jax.data.video_io import VideoReadError
from sora_jax.generate import CheckpointMissing
from sora_jax.train.loop import Preempted, TrainingDiverged

COMMANDS = ("train", "sample", "eval", "aot", "bench", "prepare", "cache-latents")


def make_flags(argv):
  """A fresh flag set per invocation, so the CLI can also be driven in-process (tests).

  config_flags defines the `--config.a.b` override flags from the argv it is given."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "experiment config file (configs/<name>.py[:variant])",
                                   flag_values=fv, sys_argv=list(argv))
  flags.DEFINE_string("workdir", None, "run directory: checkpoints, TensorBoard events, samples", flag_values=fv)
  flags.DEFINE_multi_string("prompt", [], "caption(s) to sample; repeat for several", flag_values=fv)
  flags.DEFINE_string("image", None, "sample: image-to-video, every prompt's video opens on this picture "
                      "(.png / .jpg, resized to --height x --width)", flag_values=fv)
  flags.DEFINE_integer("num_frames", None, "frames to sample (1 + 4k); default from the config", flag_values=fv)
  flags.DEFINE_integer("height", None, "pixel height; default from the config", flag_values=fv)
  flags.DEFINE_integer("width", None, "pixel width; default from the config", flag_values=fv)
  flags.DEFINE_integer("steps", None, "sampler steps; default from the config", flag_values=fv)
  flags.DEFINE_float("guidance", None, "classifier-free guidance scale; default from the config", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=fv)
  flags.DEFINE_string("output", None, "output .mp4 / .gif / .png (png for 1 frame); aot: a .json report",
                      flag_values=fv)
  flags.DEFINE_bool("vae_only", False, "train: stop after the VAE stage (e.g. before cache-latents)",
                    flag_values=fv)
  flags.DEFINE_bool("distributed", False, "join a multi-host job (auto-detected on Cloud TPU, GKE, SLURM)",
                    flag_values=fv)
  flags.DEFINE_string("coordinator", None, "multi-host: coordinator host:port (implies --distributed)",
                      flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "multi-host: number of processes (with --coordinator)",
                       flag_values=fv)
  flags.DEFINE_integer("process_id", None, "multi-host: this process's index (with --coordinator)",
                       flag_values=fv)
  flags.DEFINE_string("topology", None, "aot: TPU slice, e.g. v5p-256, v6e-256 or v5p:4x4x8", flag_values=fv)
  flags.DEFINE_string("input", None, "prepare: folder of videos with .txt captions, a .csv / .jsonl of "
                      "path, caption, or shapes:N (N synthetic moving-shapes videos); cache-latents: "
                      "a prepare output", flag_values=fv)
  flags.DEFINE_float("fps", 8.0, "prepare: frame rate clips are resampled to", flag_values=fv)
  flags.DEFINE_integer("clip_frames", 17, "prepare: frames per clip (1 + 4k)", flag_values=fv)
  flags.DEFINE_integer("clip_stride", 17, "prepare: frames between clip starts", flag_values=fv)
  flags.DEFINE_integer("bench_steps", 10, "bench: timed steps after warm-up", flag_values=fv)
  flags.DEFINE_float("peak_tflops", None, "bench: peak TFLOP/s per device for MFU (default: known devices)",
                     flag_values=fv)
  flags.DEFINE_bool("unpacked", False, "bench: also time the same examples unpacked (one per row)",
                    flag_values=fv)
  flags.DEFINE_integer("num_slices", 1, "aot: slices of a multislice job (DCN)", flag_values=fv)
  return fv


class UsageError(ValueError):
  pass


def _require(args, name):
  value = getattr(args, name)
  if value is None:
    raise UsageError(f"--{name} is required")
  return value


def _sample_args(args, config):
  s = config.sample
  pick = lambda flag, default: default if getattr(args, flag) is None else getattr(args, flag)
  return dict(num_frames=pick("num_frames", s.num_frames), height=pick("height", s.height),
              width=pick("width", s.width), steps=pick("steps", s.steps), guidance=pick("guidance", s.guidance))


def cmd_train(args):
  from sora_jax import pipeline
  config, workdir = _require(args, "config"), _require(args, "workdir")
  summary = pipeline.train_and_evaluate(config, workdir, vae_only=args.vae_only)
  print(json.dumps(summary, indent=1))


def cmd_sample(args):
  from sora_jax.data.video_io import write_video
  from sora_jax.generate import Pipeline
  workdir, output = _require(args, "workdir"), _require(args, "output")
  if not args.prompt:
    raise UsageError("--prompt is required (repeat it for several prompts)")
  pipe = Pipeline.load(workdir)
  sample_args = _sample_args(args, pipe.config)
  first_frames = None
  if args.image:
    from sora_jax.data.video_io import read_image
    first_frames = [read_image(args.image, (sample_args["height"], sample_args["width"]))] * len(args.prompt)
  videos = pipe.generate(args.prompt, seed=args.seed, first_frames=first_frames, **sample_args)
  stem, ext = os.path.splitext(output)
  paths = [output] if len(videos) == 1 else [f"{stem}_{i}{ext}" for i in range(len(videos))]
  for path, video in zip(paths, videos):
    write_video(path, video, fps=pipe.config.sample.fps)
    print(path)


def cmd_eval(args):
  from sora_jax import pipeline
  from sora_jax.generate import Pipeline
  workdir = _require(args, "workdir")
  pipe = Pipeline.load(workdir)
  print(json.dumps(pipeline.evaluate(pipe, workdir, seed=args.seed, **_sample_args(args, pipe.config)), indent=1))


def cmd_aot(args):
  from sora_jax import aot
  from sora_jax.files import write_json
  config, topology = _require(args, "config"), _require(args, "topology")
  report = aot.compile_report(config, topology, args.num_slices)
  if args.output:
    write_json(args.output, report)
  print(json.dumps(report, indent=1))


def cmd_prepare(args):
  from sora_jax.data.prepare import prepare
  source, output = _require(args, "input"), _require(args, "output")
  report = prepare(source, output, fps=args.fps, clip_frames=args.clip_frames, clip_stride=args.clip_stride)
  print(f"{report['clips']} clips from {report['videos_used']} of {report['videos']} videos into {output}; "
        f"{report['skipped_count']} skipped {report['skipped_reasons']} (listed in {output}/report.json)")


def cmd_cache_latents(args):
  from sora_jax.data.latent_cache import cache_latents
  from sora_jax.data.prepare import clip_source
  from sora_jax.generate import Pipeline
  workdir, source, output = _require(args, "workdir"), _require(args, "input"), _require(args, "output")
  pipe = Pipeline.load(workdir, dit=False)
  c = pipe.config
  count = cache_latents(pipe.vae, pipe.vae_params, clip_source(source), output,
                        budget=c.train.row_length, patch=tuple(c.model.patch))
  print(f"{count} clips encoded with the VAE of {workdir} into {output}; "
        f"train on them with --config.data.latents={output}")


def cmd_bench(args):
  from sora_jax.bench import run_bench
  peak = args.peak_tflops * 1e12 if args.peak_tflops else None
  report = run_bench(_require(args, "config"), steps=args.bench_steps, peak_flops=peak, unpacked=args.unpacked)
  print(json.dumps(report, indent=1))


def _flag_error(error, argv):
  """One line for a flag error (config_flags puts a traceback in some of its messages)."""
  lines = [line for line in str(error).splitlines() if line.strip()]
  message = lines[-1] if "Traceback" in str(error) else lines[0]
  override = re.match(r"Unknown command line flag '(config\.[\w.]+)'", message)
  if override and not any(a.startswith("--config=") for a in argv):
    return f"--{override.group(1)} needs --config=configs/<name>.py"
  return message


def _load_config(args):
  """config_flags loads the file lazily: turn its failures into one line naming the file."""
  try:
    config = args.config
    config.keys()  # a file that failed to load raises only on first use
    return config
  except (OSError, ValueError, KeyError, AttributeError) as e:
    path = args["config"].config_filename.split(":")[0]
    if not os.path.isfile(path):
      raise UsageError(f"--config={path}: no such config file") from None
    raise UsageError(f"--config={args['config'].config_filename}: {str(e).strip().splitlines()[0]}") from None


def main(argv):
  args = make_flags(argv)
  try:
    rest = args(argv)
  except flags.Error as e:
    raise UsageError(_flag_error(e, argv)) from None
  except (AttributeError, KeyError) as e:  # config_flags: an override names no config key
    key = str(e).strip("\"'")
    given = [a for a in argv if a.startswith("--config.") and key in a.split("=", 1)[0].split(".")[1:]]
    raise UsageError(f"{given[0] if given else key}: {key!r} is not a key of the config") from None
  if len(rest) != 2 or rest[1] not in COMMANDS:
    raise UsageError(f"give one command from {COMMANDS}, e.g. `sora-jax train --config=configs/shapes.py --workdir=runs/shapes`")
  if args.distributed or args.coordinator:
    from sora_jax.parallel.distributed import initialize
    initialize(args.coordinator, args.num_processes, args.process_id)
  if args["config"].present:
    from sora_jax.config import validate
    validate(_load_config(args))
  {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "aot": cmd_aot,
   "bench": cmd_bench, "prepare": cmd_prepare, "cache-latents": cmd_cache_latents}[rest[1]](args)


def run(argv=None):
  try:
    main(sys.argv if argv is None else argv)
  except Preempted as e:
    print(f"sora-jax: {e}", file=sys.stderr)
    sys.exit(143)  # 128 + SIGTERM: schedulers restart the job, which resumes
  except (UsageError, ConfigError, CheckpointMissing, VideoReadError, TrainingDiverged) as e:
    print(f"sora-jax: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run()
