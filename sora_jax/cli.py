"""`sora-jax` command line. `sora-jax --help` lists the commands, `sora-jax COMMAND --help` the
flags of one: both come from COMMANDS and FLAGS below.

This module imports no jax at the top, so `--help` answers at once and run() can choose JAX's
platforms (sora_jax/platforms.py) before jax is imported.
"""

import dataclasses
import functools
import json
import os
import re
import sys

from absl import flags
from ml_collections import config_flags

from sora_jax import platforms

# name -> (usage after `sora-jax NAME`, what it does)
COMMANDS = {
    "train": (
        "--config=FILE --workdir=DIR [--config.KEY=VALUE ...]",
        "train the VAE, then the DiT, then score held-out samples; resumes from --workdir",
    ),
    "sample": (
        "--workdir=DIR --prompt=TEXT [--prompt=TEXT ...] --output=FILE.mp4 [one mode flag]",
        "sample videos from a trained run: text-to-video or -image; image-to-video at any frame "
        "(--image), extension (--extend), --connect, --loop, SDEdit (--edit), long videos (--long_frames)",
    ),
    "eval": (
        "--workdir=DIR [--modes=all]",
        "sample the held-out prompts, score colour, direction and shape, "
        "then every prompting mode (eval.json)",
    ),
    "sweep": (
        "--config=SWEEP.py --workdir=DIR [--worker=i --num_workers=n]",
        "run a scaling sweep's cells (configs/sweeps/): each a run in DIR/cells/<config hash>/; "
        "reruns skip done cells and resume partial ones",
    ),
    "fit": (
        "--sweep=DIR",
        "scaling laws from a sweep's finished cells: L(C), L(N, D), N_opt(C) with bootstrap 90 % bands, "
        "an extrapolation check, plots (DIR/report/)",
    ),
    "grid": (
        "--sweep=DIR | --workdir=DIR",
        "the same prompts, seeds and initial latents sampled at several compute points, by training "
        "FLOPs: a sweep's frontier models (DIR/report/) or one run's kept checkpoints (DIR/grid/); "
        "grid.png, grid.mp4, grid.json (scores)",
    ),
    "export": (
        "--workdir=DIR --output=OUT [--dtype=float32|bfloat16] [--weights=ema|raw] [--serving]",
        "a run's weights as a diffusers-style folder of safetensors (model_index.json, transformer/, "
        "vae/, text_encoder/, README.md model card); sample it with `sora-jax sample --model=OUT`",
    ),
    "validate": (
        "--workdir=DIR",
        "fixed-noise validation loss of a run's weights: per time, mean, standard error, per bucket "
        "(validation.json)",
    ),
    "aot": (
        "--config=FILE --topology=SLICE",
        "compile the train and sampling steps for a TPU slice here: memory per chip, FLOPs, roofline",
    ),
    "bench": ("--config=FILE", "time the DiT train step and one sampling evaluation on this machine"),
    "family": (
        "--config=FILE [--topology=SLICE]",
        "the model family of scaling studies: parameters and train FLOPs per token of each size "
        "(with --topology, the compile-ahead memory fit on a TPU slice)",
    ),
    "coord-check": (
        "--config=FILE --widths=W,W,... --output=DIR",
        "muP coordinate check: activation size per layer over the first updates at several widths, "
        "standard vs muP (table, JSON, PNG)",
    ),
    "prepare": (
        "--input=DIR|LIST.csv|LIST.jsonl|shapes:N --output=DIR",
        "cut captioned videos into clips at one frame rate: a dataset for --config.data.clips",
    ),
    "cache-latents": (
        "--workdir=DIR --input=PREPARED --output=DIR",
        "encode prepared clips with a run's VAE: latents for --config.data.latents",
    ),
    "fvd": (
        "--real=VIDEOS --generated=VIDEOS [--frames=16] [--output=FVD.json]",
        "Frechet Video Distance (Kinetics-400 I3D) between two folders of videos or prepared datasets",
    ),
    "finetune": (
        "--base=RUN --config=configs/finetune/NAME.py --workdir=DIR [--config.KEY=VALUE ...]",
        "train an adapter (LoRA, MotionLoRA) on a trained run kept frozen; DIR holds the adapter alone "
        "and its samples with and without it (finetune_eval.json); sample with --adapter=DIR",
    ),
    "eval-vae": (
        "--workdir=DIR --input=CLIPS|VIDEOS [--split=validation] [--output=DIR]",
        "a run's VAE on held-out real clips: PSNR, SSIM, PSNR by frame, original / reconstruction / error PNG",
    ),
}
CONFIGURED = (
    "train",
    "aot",
    "bench",
    "family",
    "coord-check",
    "finetune",
)  # the commands that take --config and --config.KEY overrides
SAMPLING = ("sample", "eval")
MULTIHOST = ("train", "sample", "eval", "bench", "cache-latents")

# Every flag but --config, once: (define, name, default, help, the commands that read it). A
# command's --help lists its rows and the command refuses the others, so help cannot drift from
# use; a new flag is one row.
FLAGS = (
    (
        flags.DEFINE_string,
        "workdir",
        None,
        "run directory: checkpoints, TensorBoard events, samples",
        (
            "train",
            "sample",
            "eval",
            "validate",
            "sweep",
            "cache-latents",
            "grid",
            "export",
            "eval-vae",
            "finetune",
        ),
    ),
    (
        flags.DEFINE_string,
        "base",
        None,
        "finetune: the trained run (its --workdir) the adapter is trained on; only read",
        ("finetune",),
    ),
    (
        flags.DEFINE_multi_string,
        "adapter",
        [],
        "a `sora-jax finetune` folder whose adapter is folded into the DiT, DIR or DIR:WEIGHT "
        "(repeat for several; export: merged into the exported weights); refused if trained on another base",
        ("sample", "export"),
    ),
    (
        flags.DEFINE_string,
        "trajectory",
        None,
        'a JSON file of trajectories the shape follows, {"trajectories": [[[x, y], ...], ...]} in output '
        "pixels, spread evenly over the frames (needs a Tora --adapter; one-pass modes)",
        ("sample",),
    ),
    (
        flags.DEFINE_bool,
        "draw_trajectory",
        False,
        "with --trajectory: draw the asked path on the output (grey) and the point asked for on each frame (ring)",
        ("sample",),
    ),
    (
        flags.DEFINE_string,
        "model",
        None,
        "an exported model folder (`sora-jax export`), sampled instead of a run's --workdir",
        ("sample",),
    ),
    (flags.DEFINE_string, "dtype", "float32", "exported weights' dtype: float32 or bfloat16", ("export",)),
    (
        flags.DEFINE_string,
        "weights",
        "ema",
        "ema (the EMA weights, what sampling uses) or raw (the training weights)",
        ("export",),
    ),
    (flags.DEFINE_integer, "max_shard_mb", 5120, "safetensors files past this size are sharded", ("export",)),
    (
        flags.DEFINE_bool,
        "serving",
        False,
        "also jax.export artefacts of one denoising step and the VAE decoder (OUT/serving/)",
        ("export",),
    ),
    (flags.DEFINE_multi_string, "prompt", [], "caption to sample; repeat for several", ("sample",)),
    (
        flags.DEFINE_string,
        "expand_prompt",
        None,
        "rewrite prompts before sampling: 'rules' (terse shapes prompts -> training captions), "
        "a local text model folder (transformers), or a Python entry point module:function",
        ("sample",),
    ),
    (
        flags.DEFINE_string,
        "image",
        None,
        "image-to-video: every prompt's video holds this picture at "
        "--image_at (.png / .jpg, resized to --height x --width)",
        ("sample",),
    ),
    (
        flags.DEFINE_string,
        "image_at",
        "first",
        "where --image goes: first, last, or a frame index (frames "
        "after 0 share a latent frame with their group of 4: the picture fills that group)",
        ("sample",),
    ),
    (
        flags.DEFINE_multi_string,
        "video",
        [],
        "an input video (.mp4 / .gif; resized to --height x --width, "
        "used at its own frame rate): one with --extend, two with --connect",
        ("sample",),
    ),
    (
        flags.DEFINE_string,
        "extend",
        None,
        "forward: continue --video after its end; backward: invent what "
        "came before its start. The output holds the whole input, with the new frames after / before it",
        ("sample",),
    ),
    (
        flags.DEFINE_integer,
        "overlap",
        None,
        "latent frames shared with an input video (1 + 4(k-1) frames "
        "at a start, 4k at an end); default 2 for --extend and --long_frames, 1 for --connect and --loop",
        ("sample",),
    ),
    (
        flags.DEFINE_bool,
        "connect",
        False,
        "a transition from the end of the first video to the start of the "
        "second (two --video flags, or `--connect a.mp4 b.mp4`); the output holds a, the transition, then b",
        ("sample",),
    ),
    (
        flags.DEFINE_bool,
        "loop",
        False,
        "a video that plays seamlessly on repeat: a sample, then frames "
        "leading from its end back to its start",
        ("sample",),
    ),
    (
        flags.DEFINE_string,
        "edit",
        None,
        "SDEdit: this video's first --num_frames frames noised to "
        "t = --strength, then denoised with --prompt (resized to --height x --width)",
        ("sample",),
    ),
    (
        flags.DEFINE_float,
        "strength",
        None,
        "--edit: noise level in (0, 1]: low keeps the input's layout, high "
        "follows the prompt (default 0.6)",
        ("sample",),
    ),
    (
        flags.DEFINE_integer,
        "long_frames",
        None,
        "a long video of this many frames, sampled --num_frames at a "
        "time, each chunk extending the last (memory flat in the length; .mp4 written as it comes); "
        "with --image, the long video opens on that picture",
        ("sample",),
    ),
    (
        flags.DEFINE_string,
        "modes",
        None,
        "prompting modes to score besides text-to-video: all, none, or a "
        "comma-separated list of extend_forward, extend_backward, image_last, connect, loop, sdedit, long "
        "(default: the run's sample.eval_modes)",
        ("eval",),
    ),
    (
        flags.DEFINE_integer,
        "num_frames",
        None,
        "frames to sample (1 + 4k); default from the config",
        SAMPLING,
    ),
    (flags.DEFINE_integer, "height", None, "pixel height; default from the config", SAMPLING),
    (flags.DEFINE_integer, "width", None, "pixel width; default from the config", SAMPLING),
    (flags.DEFINE_integer, "steps", None, "sampler steps, >= 1; default from the config", SAMPLING),
    (
        flags.DEFINE_float,
        "guidance",
        None,
        "classifier-free guidance scale, >= 0 (1: none); default from " "the config",
        SAMPLING,
    ),
    (flags.DEFINE_integer, "seed", 0, "sampling seed", SAMPLING),
    (
        flags.DEFINE_string,
        "output",
        None,
        "sample: a .mp4 / .gif / .png video (.png: 1 frame); aot, family, fvd: a .json "
        "report; prepare, cache-latents, coord-check, eval-vae: the output folder",
        ("sample", "aot", "family", "prepare", "cache-latents", "coord-check", "export", "fvd", "eval-vae"),
    ),
    (
        flags.DEFINE_bool,
        "vae_only",
        False,
        "stop after the VAE stage (e.g. before cache-latents)",
        ("train",),
    ),
    (
        flags.DEFINE_bool,
        "distributed",
        False,
        "join a multi-host job (auto-detected on Cloud TPU, GKE, " "SLURM)",
        MULTIHOST,
    ),
    (
        flags.DEFINE_string,
        "coordinator",
        None,
        "multi-host: coordinator host:port (implies --distributed)",
        MULTIHOST,
    ),
    (
        flags.DEFINE_integer,
        "num_processes",
        None,
        "multi-host: number of processes (with --coordinator)",
        MULTIHOST,
    ),
    (
        flags.DEFINE_integer,
        "process_id",
        None,
        "multi-host: this process's index (with --coordinator)",
        MULTIHOST,
    ),
    (
        flags.DEFINE_string,
        "topology",
        None,
        "TPU slice, e.g. v5p-256, v6e-256 or v5p:4x4x8",
        ("aot", "family"),
    ),
    (flags.DEFINE_string, "sweep", None, "a `sora-jax sweep` folder", ("fit", "grid")),
    (flags.DEFINE_integer, "worker", 0, "this worker's index: it runs cells k with k mod n == i", ("sweep",)),
    (flags.DEFINE_integer, "num_workers", 1, "workers sharing the sweep", ("sweep",)),
    (
        flags.DEFINE_bool,
        "plan",
        False,
        "resolve, validate and (for a pod sweep) compile every cell ahead; print the cells, train nothing",
        ("sweep",),
    ),
    (
        flags.DEFINE_string,
        "widths",
        "64,128,256,512",
        "model widths to compare, comma-separated (heads grow with width at the config's head size)",
        ("coord-check",),
    ),
    (
        flags.DEFINE_integer,
        "check_steps",
        5,
        "forward passes recorded, one before each update",
        ("coord-check",),
    ),
    (flags.DEFINE_integer, "num_slices", 1, "slices of a multislice job (DCN)", ("aot",)),
    (
        flags.DEFINE_string,
        "input",
        None,
        "prepare: a folder of videos with .txt captions, a .csv / .jsonl "
        "of path, caption, or shapes:N (N synthetic moving-shapes videos); cache-latents: a prepare "
        "output; eval-vae: a prepare output, a folder of videos or a video",
        ("prepare", "cache-latents", "eval-vae"),
    ),
    (flags.DEFINE_float, "fps", 8.0, "frame rate clips are resampled to", ("prepare",)),
    (
        flags.DEFINE_string,
        "real",
        None,
        "fvd: the reference videos (a folder, a prepare output, or a file)",
        ("fvd",),
    ),
    (flags.DEFINE_string, "generated", None, "fvd: the videos scored against them (same kinds)", ("fvd",)),
    (flags.DEFINE_integer, "frames", 16, "fvd: the first frames of each video the I3D sees", ("fvd",)),
    (flags.DEFINE_integer, "clip_frames", 17, "frames per clip (1 + 4k)", ("prepare",)),
    (flags.DEFINE_integer, "clip_stride", 17, "frames between clip starts", ("prepare",)),
    (
        flags.DEFINE_integer,
        "max_size",
        0,
        "cap the longer side of stored clips at this many pixels, aspect kept (0: as decoded)",
        ("prepare",),
    ),
    (
        flags.DEFINE_integer,
        "min_size",
        0,
        "skip videos whose shorter side is under this (pixels)",
        ("prepare",),
    ),
    (flags.DEFINE_float, "min_seconds", 0.0, "skip videos shorter than this", ("prepare",)),
    (
        flags.DEFINE_float,
        "scene_cut",
        0.0,
        "no clip spans a scene cut: a frame whose mean colour change from the last exceeds this share "
        "(e.g. 0.1; 0: off)",
        ("prepare",),
    ),
    (
        flags.DEFINE_float,
        "validation_fraction",
        0.0,
        "share of the videos held out, whole, as a 'validation' split (the validation loss of runs on them)",
        ("prepare",),
    ),
    (
        flags.DEFINE_string,
        "caption",
        None,
        "the caption of every video that has none of its own (e.g. footage for a VAE, which reads no "
        "captions); without it such videos are skipped and listed",
        ("prepare",),
    ),
    (
        flags.DEFINE_string,
        "captioner",
        None,
        "write a second caption for every clip from its frames: 'shapes', a local image-to-text model "
        "folder, or a Python entry point module:function (train on it with data.generated_caption_share)",
        ("prepare",),
    ),
    (
        flags.DEFINE_string,
        "beam_runner",
        None,
        "build the dataset as an Apache Beam pipeline on this runner: DirectRunner (this machine), "
        "DataflowRunner, FlinkRunner, SparkRunner (the `beam` extra; launch/beam_prepare.md)",
        ("prepare",),
    ),
    (
        flags.DEFINE_string,
        "beam_options",
        "",
        "the runner's pipeline flags, e.g. '--project=P --region=R --temp_location=gs://B/tmp' "
        "or '--direct_num_workers=2 --direct_running_mode=multi_processing'",
        ("prepare",),
    ),
    (
        flags.DEFINE_string,
        "split",
        "validation",
        "eval-vae: the split of a prepare output (validation: videos training never saw)",
        ("eval-vae",),
    ),
    (flags.DEFINE_integer, "max_videos", None, "eval-vae: evaluate at most this many videos", ("eval-vae",)),
    (
        flags.DEFINE_integer,
        "chunk_latents",
        None,
        "eval-vae: latent frames per streamed chunk (4 video frames each; default the run's "
        "sample.chunk_latents): peak memory grows with it, not with the video's length",
        ("eval-vae",),
    ),
    (flags.DEFINE_integer, "bench_steps", 10, "timed steps after warm-up", ("bench",)),
    (
        flags.DEFINE_float,
        "peak_tflops",
        None,
        "peak TFLOP/s per device for MFU (default: known devices)",
        ("bench",),
    ),
    (flags.DEFINE_bool, "unpacked", False, "also time the same examples unpacked (one per row)", ("bench",)),
)
CONFIG_HELP = (
    ("--config=FILE[:VARIANT]", "experiment config file, e.g. configs/shapes.py:tiny"),
    ("--config.KEY=VALUE", "override one value of the config, e.g. --config.train.steps=100"),
)
METAVARS = {
    flags.DEFINE_string: "STR",
    flags.DEFINE_multi_string: "STR",
    flags.DEFINE_integer: "INT",
    flags.DEFINE_float: "FLOAT",
}


def make_flags(argv):
  """A fresh flag set per invocation, so the CLI can also be driven in-process (tests).

  config_flags defines the `--config.a.b` override flags from the argv it is given."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, CONFIG_HELP[0][1], flag_values=fv, sys_argv=list(argv))
  for define, name, default, help_text, _ in FLAGS:
    define(name, default, help_text, flag_values=fv)
  return fv


def usage(command=None):
  """`sora-jax --help` (command None): the commands; `sora-jax COMMAND --help`: its flags."""
  if command is None:
    width = max(map(len, COMMANDS))
    return "\n".join(
        [
            "usage: sora-jax COMMAND [--flag=value ...]",
            "",
            "commands:",
            *(f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()),
            "",
            "`sora-jax COMMAND --help` lists the flags of a command.",
        ]
    )
  rows = list(CONFIG_HELP) if command in CONFIGURED else []
  if command == "sweep":
    rows = [("--config=SWEEP.py", "sweep config, e.g. configs/sweeps/shapes_scaling.py")]
  for define, name, default, help_text, commands in FLAGS:
    if command in commands:
      shown = f"--{name}={METAVARS[define]}" if define in METAVARS else f"--[no]{name}"
      if default not in (None, []):
        help_text += f" (default: {str(default).lower() if isinstance(default, bool) else default})"
      rows.append((shown, help_text))
  width = max(len(shown) for shown, _ in rows)
  args, about = COMMANDS[command]
  return "\n".join(
      [
          f"usage: sora-jax {command} {args}",
          "",
          about,
          "",
          "flags:",
          *(f"  {shown:<{width}}  {help_text}" for shown, help_text in rows),
      ]
  )


class UsageError(ValueError):
  pass


def _require(args, name):
  value = getattr(args, name)
  if value is None:
    raise UsageError(f"--{name} is required")
  return value


def _check_sampler_flags(args):
  """Sampler settings given on the command line, checked before the run is loaded."""
  if args.steps is not None and args.steps < 1:
    raise UsageError(f"--steps={args.steps}: the sampler needs at least 1 step")
  if args.guidance is not None and args.guidance < 0:
    raise UsageError(
        f"--guidance={args.guidance}: the guidance scale is >= 0 " "(1: no classifier-free guidance)"
    )


def _check_output(output, num_frames=None):
  from sora_jax.data.video_io import check_output

  try:
    check_output(output, num_frames)
  except ValueError as e:
    raise UsageError(f"--output={e}") from None


def _sample_args(args, config):
  """The run's sample settings, each overridden by its flag where given."""
  from sora_jax.generate import sample_settings

  return {
      key: default if getattr(args, key) is None else getattr(args, key)
      for key, default in sample_settings(config).items()
  }


def cmd_train(args):
  from sora_jax import pipeline

  config, workdir = _require(args, "config"), _require(args, "workdir")
  summary = pipeline.train_and_evaluate(config, workdir, vae_only=args.vae_only)
  print(json.dumps(summary, indent=1))


def cmd_finetune(args):
  from sora_jax.train.finetune_stage import finetune

  base, workdir = _require(args, "base"), _require(args, "workdir")
  summary = finetune(base, _load_config(args), workdir)
  print(json.dumps(summary, indent=1))
  print(f"sample with: sora-jax sample --workdir={base} --adapter={workdir} --prompt=TEXT --output=OUT.mp4")


# The sample modes' flags, at most one per call (each is off at its default: None or False), but
# --image may open a --long_frames video.
SAMPLE_MODES = ("image", "extend", "connect", "loop", "edit", "long_frames")


def _sample_mode(args, positional):
  """The one mode of a sample call (None: text-to-video) and its input videos; conflicts and
  flags that belong to another mode are one-line errors."""
  chosen = [
      name for name in SAMPLE_MODES if getattr(args, name) is not None and getattr(args, name) is not False
  ]
  if chosen == ["image", "long_frames"]:  # a long video that opens on the picture
    if args.image_at not in ("first", "0"):
      raise UsageError("--image with --long_frames opens the video on the picture: drop --image_at")
    chosen = ["long_frames"]
  if len(chosen) > 1:
    raise UsageError(
        f"--{chosen[0]} and --{chosen[1]} are different modes: give one per call (only --image goes with "
        "--long_frames)"
    )
  mode = chosen[0] if chosen else None
  videos = list(args.video) + list(positional)
  if positional and mode != "connect":
    raise UsageError(f"unexpected argument {positional[0]!r} (videos after the command go with --connect)")
  wanted = {"extend": 1, "connect": 2}.get(mode, 0)
  if len(videos) != wanted:
    raise UsageError(
        f"--{mode} takes {wanted} input video(s), got {len(videos)}"
        if wanted
        else "--video needs --extend or --connect"
    )
  for flag, modes_of_flag, default in (
      ("image_at", ("image",), "first"),
      ("strength", ("edit",), None),
      ("overlap", ("extend", "connect", "loop", "long_frames"), None),
  ):
    if getattr(args, flag) != default and mode not in modes_of_flag:
      raise UsageError(f"--{flag} goes with --{' / --'.join(modes_of_flag)}")
  return mode, videos


def _frame_index(text):
  """--image_at: first, last or a frame index (negative counts from the end)."""
  named = {"first": 0, "last": -1}
  if text in named:
    return named[text]
  try:
    return int(text)
  except ValueError:
    raise UsageError(f"--image_at={text!r}: give first, last or a frame index") from None


def _sample_plans(args, mode, videos, size):
  """One plan per prompt for the single-pass modes; their inputs are read (and checked) now,
  before any sampling, keeping only the frames a condition needs."""
  from sora_jax import modes
  from sora_jax.data.video_io import VideoChunks, read_image, read_video
  from sora_jax.generate import Request

  frame_size = (size["height"], size["width"])
  prompts = args.prompt
  if mode == "image":
    image = read_image(args.image, frame_size)
    return [modes.image_plan(p, image, at=_frame_index(args.image_at), **size) for p in prompts]
  if mode == "extend":
    overlap = 2 if args.overlap is None else args.overlap
    forward = args.extend == "forward"
    shared = modes.head_frames(overlap) if forward else 4 * overlap
    (path,) = videos
    video = read_video(path, size=frame_size, **({"last": shared} if forward else {"max_frames": shared}))
    return [
        modes.extend_plan(
            p, video, direction=args.extend, overlap=overlap, **size, whole=VideoChunks(path, frame_size)
        )
        for p in prompts
    ]
  if mode == "connect":
    overlap = 1 if args.overlap is None else args.overlap
    a = read_video(videos[0], last=modes.head_frames(overlap), size=frame_size)
    b = read_video(videos[1], max_frames=4 * overlap, size=frame_size)
    return [
        modes.connect_plan(
            p,
            a,
            b,
            overlap=overlap,
            **size,
            whole_a=VideoChunks(videos[0], frame_size),
            whole_b=VideoChunks(videos[1], frame_size),
        )
        for p in prompts
    ]
  if mode == "edit":
    video = read_video(args.edit, max_frames=size["num_frames"], size=frame_size)
    strength = 0.6 if args.strength is None else args.strength
    return [modes.edit_plan(p, video, strength=strength, **size) for p in prompts]
  return [modes.Plan(Request(p, **size)) for p in prompts]


def cmd_sample(args, positional=()):
  import numpy as np
  from sora_jax import modes
  from sora_jax.adapters import apply_adapters
  from sora_jax.data.video_io import write_video
  from sora_jax.generate import Pipeline

  if bool(args.model) == bool(args.workdir):
    raise UsageError("sample: give --workdir=DIR (a run) or --model=DIR (an export)")
  workdir, output = args.model or args.workdir, _require(args, "output")
  if not args.prompt:
    raise UsageError("--prompt is required (repeat it for several prompts)")
  _check_sampler_flags(args)
  if args.expand_prompt:
    from sora_jax.prompts import load_expander

    expanded = load_expander(args.expand_prompt)(args.prompt)
    for before, after in zip(args.prompt, expanded):
      if after != before:
        print(f"prompt {before!r} -> {after!r}", file=sys.stderr)
    args.prompt = expanded
  mode, videos = _sample_mode(args, positional)
  if mode == "extend" and args.extend not in modes.EXTEND_DIRECTIONS:
    raise UsageError(f"--extend={args.extend!r}; choose from {modes.EXTEND_DIRECTIONS}")
  if args.trajectory and mode in ("long_frames", "loop"):
    raise UsageError(f"--trajectory steers one sampled window: it does not combine with --{mode}")
  if args.draw_trajectory and not args.trajectory:
    raise UsageError("--draw_trajectory draws the path of --trajectory=FILE: give it")
  _check_output(output)
  pipe = apply_adapters(Pipeline.load(workdir), args.adapter)
  sample_args = _sample_args(args, pipe.config)
  run = {k: sample_args.pop(k) for k in ("steps", "guidance")} | {"seed": args.seed}
  frames = args.long_frames or sample_args["num_frames"]
  _check_output(output, 2 if mode in ("extend", "connect", "loop") else frames)  # those are always videos
  stem, ext = os.path.splitext(output)
  paths = [output] if len(args.prompt) == 1 else [f"{stem}_{i}{ext}" for i in range(len(args.prompt))]
  fps = pipe.config.sample.fps
  if mode == "long_frames":
    from sora_jax.data.video_io import read_image

    overlap = 2 if args.overlap is None else args.overlap
    image = (
        None if args.image is None else read_image(args.image, (sample_args["height"], sample_args["width"]))
    )
    chunks = modes.long_videos(
        pipe,
        args.prompt,
        total_frames=args.long_frames,
        overlap=overlap,
        first_frames=None if image is None else [image] * len(args.prompt),
        **sample_args,
        **run,
    )
    if len(paths) == 1:  # written as the chunks come: memory flat in the length
      write_video(output, (c[0] for c in chunks), fps=fps)
      print(output)
      return
    outputs = [np.concatenate(v) for v in zip(*chunks)]
  elif mode == "loop":
    outputs = modes.loop(
        pipe, args.prompt, overlap=1 if args.overlap is None else args.overlap, **sample_args, **run
    )
  else:
    plans = _sample_plans(args, mode, videos, sample_args)
    tracks = ()
    if args.trajectory:
      from sora_jax.data.trajectory import read_trajectories

      size = (sample_args["num_frames"], sample_args["height"], sample_args["width"])
      tracks = tuple(read_trajectories(args.trajectory, *size))
      plans = [
          dataclasses.replace(p, request=dataclasses.replace(p.request, trajectories=tracks)) for p in plans
      ]
    windows = pipe.sample([p.request for p in plans], **run)
    if args.draw_trajectory:
      from sora_jax.data.trajectory import draw_tracks

      windows = [draw_tracks(w, tracks) for w in windows]
    outputs = [p.chunks(w) for p, w in zip(plans, windows)]
  for path, video in zip(paths, outputs):
    write_video(path, video, fps=fps)
    print(path)


def cmd_eval(args):
  from sora_jax import pipeline
  from sora_jax.generate import Pipeline

  workdir = _require(args, "workdir")
  _check_sampler_flags(args)
  pipe = Pipeline.load(workdir)
  summary = pipeline.evaluate(
      pipe, workdir, seed=args.seed, modes=args.modes, **_sample_args(args, pipe.config)
  )
  print(json.dumps(summary, indent=1))


def cmd_sweep(args):
  from sora_jax.scaling.sweep import plan, run_sweep

  path = args["config"].config_filename if args["config"].present else None
  if not path:
    raise UsageError("--config=configs/sweeps/NAME.py is required")
  if args.plan:
    print(json.dumps(plan(path), indent=1))
    return
  report = run_sweep(path, _require(args, "workdir"), worker=args.worker, num_workers=args.num_workers)
  print(json.dumps(report, indent=1))


def cmd_fit(args):
  from sora_jax.scaling.fit import fit_sweep

  report = fit_sweep(_require(args, "sweep"))
  shown = ("cells", "left_out", "L_of_C", "extrapolation", "N_opt", "lr_transfer")
  print(json.dumps({k: report[k] for k in shown if k in report}, indent=1))


MAX_GRID_MODELS = 6  # grid columns: more compute points are spread over the range


def cmd_grid(args):
  from sora_jax.scaling.grid import run_models, sample_grid, sweep_models

  if bool(args.sweep) == bool(args.workdir):
    raise UsageError("grid: give --sweep=DIR (a sweep's models) or --workdir=DIR (one run's checkpoints)")
  if args.sweep:
    report = sample_grid(sweep_models(args.sweep, MAX_GRID_MODELS), os.path.join(args.sweep, "report"))
  else:
    report = sample_grid(run_models(args.workdir, MAX_GRID_MODELS), os.path.join(args.workdir, "grid"))
  print(json.dumps({k: report[k] for k in ("models", "compute_span", "accuracy_by_model")}, indent=1))


def cmd_export(args):
  from sora_jax.export import export_run

  output = _require(args, "output")
  index = export_run(
      _require(args, "workdir"),
      output,
      dtype=args.dtype,
      weights=args.weights,
      max_shard_bytes=args.max_shard_mb * 2**20,
      serving=args.serving,
      adapters=args.adapter,
  )
  print(f"{output}: DiT step {index['step']}, {index['weights']} weights in {index['dtype']}")


def cmd_validate(args):
  from sora_jax.train.validation import validate_workdir

  report = validate_workdir(_require(args, "workdir"))
  print(json.dumps({k: v for k, v in report.items() if k != "per_example"}, indent=1))


def cmd_family(args):
  from sora_jax.files import write_json
  from sora_jax.scaling.family import family_report, table

  report = family_report(_require(args, "config"), topology=args.topology)
  if args.output:
    write_json(args.output, report)
  print(table(report))


def cmd_coord_check(args):
  from sora_jax.scaling.coord_check import run_coord_check

  widths = _int_list(args.widths, "widths")
  print(run_coord_check(_require(args, "config"), widths, args.check_steps, _require(args, "output")))


def _int_list(text, name):
  try:
    return [int(w) for w in text.split(",")]
  except ValueError:
    raise UsageError(f"--{name}={text!r}: expected comma-separated integers, e.g. 64,128,256,512") from None


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
  report = prepare(
      source,
      output,
      fps=args.fps,
      clip_frames=args.clip_frames,
      clip_stride=args.clip_stride,
      validation_fraction=args.validation_fraction,
      captioner=args.captioner,
      default_caption=args.caption,
      max_size=args.max_size,
      min_size=args.min_size,
      min_seconds=args.min_seconds,
      scene_cut=args.scene_cut,
      beam_runner=args.beam_runner,
      beam_options=args.beam_options,
  )
  held = report["splits"].get("validation")
  print(
      f"{report['clips']} clips from {report['videos_used']} of {report['videos']} videos into {output}"
      + (
          f" ({held['clips']} of them from {len(report['validation_videos'])} validation videos)"
          if held
          else ""
      )
      + f"; {report['skipped_count']} skipped {report['skipped_reasons']} (listed in {output}/report.json)"
  )


def cmd_cache_latents(args):
  from sora_jax.data.latent_cache import VALIDATION_DIR, cache_latents
  from sora_jax.data.prepare import clip_source, split_names
  from sora_jax.generate import Pipeline
  from sora_jax.models.build import caption_tokens, frozen_encoder

  workdir, source, output = _require(args, "workdir"), _require(args, "input"), _require(args, "output")
  pipe = Pipeline.load(workdir, dit=False)
  c = pipe.config
  text, identity = frozen_encoder(c), None
  if text is not None:  # the run's frozen encoder: captions are cached encoded too
    from sora_jax.models.frozen_text import identity as text_identity

    identity = text_identity(c.model.text)
  encode = functools.partial(
      cache_latents,
      pipe.vae,
      pipe.vae_params,
      budget=c.train.row_length,
      patch=tuple(c.model.patch),
      text=text,
      text_identity=identity,
      caption_tokens=functools.partial(caption_tokens, c),
      max_tokens=c.model.text.max_len,
  )
  count, truncated = encode(clip_source(source), output)
  held = ""
  if "validation" in split_names(source):
    held_count, held_truncated = encode(
        clip_source(source, "validation"), os.path.join(output, VALIDATION_DIR), stats=False
    )
    held = f" (and {held_count} validation clips into {output}/{VALIDATION_DIR})"
    truncated += held_truncated
  if truncated:
    held += (
        f"; {truncated} caption(s) longer than model.text.max_len={c.model.text.max_len} tokens lose "
        f"their end (listed in {output}/truncated_captions-*.json)"
    )
  if text is not None:
    held += f"; captions encoded by the frozen encoder {c.model.text.path}"
  print(
      f"{count} clips encoded with the VAE of {workdir} into {output}{held}; "
      f"train on them with --config.data.latents={output}"
  )


def cmd_fvd(args):
  from sora_jax.evaluation.fvd import fvd
  from sora_jax.files import write_json

  report = fvd(_require(args, "real"), _require(args, "generated"), frames=args.frames)
  if args.output:
    write_json(args.output, report)
  print(json.dumps(report, indent=1))


def cmd_eval_vae(args):
  from sora_jax.data.prepare import prepared_dirs, split_names, videos_at
  from sora_jax.data.video_io import write_video
  from sora_jax.evaluation.vae_eval import evaluate_vae
  from sora_jax.files import write_json
  from sora_jax.generate import Pipeline

  workdir, source = _require(args, "workdir"), _require(args, "input")
  output = args.output or os.path.join(workdir, "eval_vae")
  split = args.split
  if prepared_dirs(source) and split not in split_names(source):
    print(
        f"{source} has no {split!r} split: evaluating 'train' (prepare with --validation_fraction to hold videos out)"
    )
    split = "train"
  pipe = Pipeline.load(workdir, dit=False)
  report, picture = evaluate_vae(
      pipe.vae,
      pipe.vae_params,
      videos_at(source, split),
      chunk_latents=args.chunk_latents or pipe.config.sample.chunk_latents,
      max_videos=args.max_videos,
  )
  report.update(workdir=workdir, input=source, split=split if prepared_dirs(source) else None)
  write_json(os.path.join(output, "eval_vae.json"), report)
  write_video(os.path.join(output, "compare.png"), picture[None])
  print(
      f"{report['videos']} videos, {report['frames']} frames: PSNR {report['psnr']:.2f} dB, SSIM "
      f"{report['ssim']:.4f} (frame 0: {report['psnr_by_frame'][0]:.2f} dB); {output}/eval_vae.json, "
      f"{output}/compare.png (original / reconstruction / error x4)"
  )


def cmd_bench(args):
  from sora_jax.bench import run_bench

  peak = args.peak_tflops * 1e12 if args.peak_tflops else None
  report = run_bench(
      _require(args, "config"), steps=args.bench_steps, peak_flops=peak, unpacked=args.unpacked
  )
  print(json.dumps(report, indent=1))


def _command(argv):
  """The command named in argv (before parsing: for --help), or None."""
  return next((a for a in argv[1:] if a in COMMANDS), None)


def _see_help(command):
  return f"`sora-jax {command} --help` lists its flags" if command else "`sora-jax --help` lists the commands"


def _flag_error(error, argv):
  """One line for a flag error (config_flags puts a traceback in some of its messages)."""
  lines = [line for line in str(error).splitlines() if line.strip()]
  message = lines[-1] if "Traceback" in str(error) else lines[0]
  override = re.match(r"Unknown command line flag '(config\.[\w.]+)'", message)
  if override and not any(a.startswith("--config=") for a in argv):
    return f"--{override.group(1)} needs --config=configs/<name>.py"
  if message.startswith("Unknown command line flag"):
    return f"{message}; {_see_help(_command(argv))}"
  return message


def _refuse_other_flags(args, command):
  """A flag the command does not read is a mistake (e.g. --steps for train), not a no-op."""
  given = ["config"] if args["config"].present and command not in CONFIGURED + ("sweep",) else []
  given += [name for _, name, _, _, commands in FLAGS if args[name].present and command not in commands]
  if given:
    raise UsageError(f"--{given[0]} is not a flag of `sora-jax {command}`; {_see_help(command)}")


def _load_config(args):
  """config_flags loads the file lazily: turn its failures into one line naming the file."""
  try:
    config = args.config
    config.keys()  # a file that failed to load raises only on first use
    text = config.get("model", {}).get("text", {})  # a fine-tune config may have no model keys
    if text.get("path"):  # the run's config.json names the folder wherever it is read from
      config.model.text.path = os.path.abspath(config.model.text.path)
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
  if len(rest) < 2 or rest[1] not in COMMANDS or (len(rest) > 2 and rest[1] != "sample"):
    raise UsageError(
        f"give one command of {', '.join(COMMANDS)}, e.g. `sora-jax train "
        f"--config=configs/shapes.py --workdir=runs/shapes`; {_see_help(None)}"
    )
  _refuse_other_flags(args, rest[1])
  if args.distributed or args.coordinator:
    from sora_jax.parallel.distributed import initialize

    initialize(args.coordinator, args.num_processes, args.process_id)
  # A sweep config is not an experiment config; a fine-tune config is checked laid over its base.
  if args["config"].present and rest[1] not in ("sweep", "finetune"):
    from sora_jax.config import validate

    validate(_load_config(args))
  if rest[1] == "sample":
    return cmd_sample(args, rest[2:])
  {
      "train": cmd_train,
      "finetune": cmd_finetune,
      "eval": cmd_eval,
      "aot": cmd_aot,
      "bench": cmd_bench,
      "fvd": cmd_fvd,
      "eval-vae": cmd_eval_vae,
      "family": cmd_family,
      "validate": cmd_validate,
      "sweep": cmd_sweep,
      "fit": cmd_fit,
      "grid": cmd_grid,
      "export": cmd_export,
      "coord-check": cmd_coord_check,
      "prepare": cmd_prepare,
      "cache-latents": cmd_cache_latents,
  }[rest[1]](args)


def run(argv=None):
  argv = sys.argv if argv is None else argv
  if "--help" in argv[1:] or "-h" in argv[1:]:
    print(usage(_command(argv)))
    return
  platforms.skip_absent_tpu()
  # Imported only now: these modules import jax, which reads JAX_PLATFORMS on import.
  from sora_jax.config import ConfigError
  from sora_jax.data.video_io import VideoReadError
  from sora_jax.generate import CheckpointMissing
  from sora_jax.train.loop import Preempted, TrainingDiverged

  try:
    main(argv)
  except Preempted as e:
    print(f"sora-jax: {e}", file=sys.stderr)
    sys.exit(143)  # 128 + SIGTERM: schedulers restart the job, which resumes
  except (UsageError, ConfigError, CheckpointMissing, VideoReadError, TrainingDiverged) as e:
    print(f"sora-jax: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run()
