"""`sora-jax prepare`: videos + captions (or the embedded shapes) -> a TFDS dataset of clips.

--input is a folder of video files with same-stem .txt captions, a .csv (columns path, caption)
or .jsonl ({"path", "caption"}) listing them (relative paths are relative to the list's folder),
or `shapes:N` for N moving-shapes videos (the default config's seed, sizes and backgrounds).
The builders of `data/tfds_builders.py` decode each video with PyAV, resample it to `fps` and cut
clips of `clip_frames` frames (1 + 4k) every `clip_stride` frames into array_record shards under
OUTPUT/<builder>/<rules>/<version>/. Videos that cannot be used are skipped, counted and listed
with the reason in OUTPUT/report.json; the run never stops on them. With --validation_fraction,
that share of the videos (whole videos, chosen by a hash of their names) forms a 'validation'
split: the held-out clips of the fixed-noise validation loss (train/validation.py). TFDS writes into an
`incomplete.*` folder and renames it only once every shard and the dataset info are written, so a
killed run leaves nothing half-written that reads as a dataset. An OUTPUT that already holds a
prepared dataset is refused with one line, never overwritten or mixed with a second one. With
--captioner (data/captioners.py), every clip also gets a caption written from its frames, stored
beside its own; clips the captioner fails on keep only theirs and are listed in the report.
"""

import collections
import errno
import shutil
import tempfile
from pathlib import Path

import numpy as np

from sora_jax.config import VAE_TEMPORAL, ConfigError, default_config
from sora_jax.data.clips import decode_clip
from sora_jax.data.synthetic import ShapesSource
from sora_jax.data.tfds_builders import ClipConfig, MovingShapes, VideoCaptions
from sora_jax.files import write_json

SHAPES_INPUT = "shapes:"


def make_builder(
    source, output, config, validation_fraction=0.0, captioner=None, beam=None, default_caption=None
):
  """The TFDS builder for --input: `shapes:N`, or a folder / .csv / .jsonl of captioned videos
  (`default_caption` for those without one); with `beam` (PipelineOptions), its Beam form
  (data/beam_prepare.py)."""
  source = str(source)
  kwargs = dict(
      data_dir=output,
      config=config,
      file_format="array_record",
      validation_fraction=validation_fraction,
      captioner=captioner,
  )
  if beam is not None:
    from sora_jax.data import beam_prepare

    kwargs["logs_path"] = Path(output) / beam_prepare.LOGS_FILE
    shapes_builder, videos_builder = beam_prepare.BeamMovingShapes, beam_prepare.BeamVideoCaptions
  else:
    shapes_builder, videos_builder = MovingShapes, VideoCaptions
  if source.startswith(SHAPES_INPUT):
    count = source[len(SHAPES_INPUT) :]
    if not count.isdigit() or int(count) < 1:
      raise ConfigError(f"--input={source}: expected shapes:N, N >= 1 videos")
    return shapes_builder(shapes=ShapesSource.of_config(default_config(), int(count)), **kwargs)
  if not Path(source).exists():
    raise ConfigError(f"--input={source}: no such file or folder")
  return videos_builder(inputs=source, default_caption=default_caption, **kwargs)


def prepared_dirs(output):
  """Finished TFDS datasets under OUTPUT (<builder>/<rules>/<version>/, not `incomplete.*`)."""
  return [
      p.parent
      for p in Path(output).glob("*/*/*/dataset_info.json")
      if not p.parent.name.startswith("incomplete.")
  ]


def written(builder, output):
  """{split: {"clips", "shards" (relative to OUTPUT)}} of the built dataset; {} if no video was
  usable."""
  if not builder.videos_used:
    return {}
  folder = Path(builder.data_dir).relative_to(output)
  return {
      name: {"clips": split.num_examples, "shards": [str(folder / f) for f in split.filenames]}
      for name, split in builder.info.splits.items()
  }


def prepare(
    source,
    output,
    *,
    fps=8.0,
    clip_frames=17,
    clip_stride=17,
    validation_fraction=0.0,
    captioner=None,
    default_caption=None,
    max_size=0,
    min_size=0,
    min_seconds=0.0,
    scene_cut=0.0,
    beam_runner=None,
    beam_options="",
):
  """Build the clips dataset under OUTPUT and write OUTPUT/report.json; returns the report.
  captioner: a name for data/captioners.load_captioner (each clip gets a generated caption).
  default_caption: the caption of videos without one (else they are skipped and listed).
  beam_runner: build it as an Apache Beam pipeline on that runner (DirectRunner, DataflowRunner,
  FlinkRunner, SparkRunner, ...), `beam_options` its pipeline flags."""
  if clip_frames < 1 or (clip_frames - 1) % VAE_TEMPORAL:
    raise ConfigError(f"--clip_frames={clip_frames}: clips need 1 + {VAE_TEMPORAL}k frames")
  if clip_stride < 1 or fps <= 0:
    raise ConfigError(f"--clip_stride={clip_stride} --fps={fps:g}: both must be positive")
  if not 0.0 <= validation_fraction < 1.0:
    raise ConfigError(f"--validation_fraction={validation_fraction:g}: a share of the videos, in [0, 1)")
  output = Path(output)
  if prepared_dirs(output):
    raise ConfigError(
        f"--output={output} already holds a prepared dataset: remove it or choose another folder"
    )
  if captioner:
    from sora_jax.data.captioners import load_captioner

    load_captioner(captioner)  # a bad name is one line now, not an error per clip
  if max_size < 0 or max_size % 2:
    raise ConfigError(f"--max_size={max_size}: an even number of pixels for the longer side (0: keep)")
  if min_size < 0 or min_seconds < 0 or not 0.0 <= scene_cut < 1.0:
    raise ConfigError(
        f"--min_size={min_size} --min_seconds={min_seconds:g} --scene_cut={scene_cut:g}: sizes and "
        "seconds are >= 0, the scene-cut threshold a share in [0, 1)"
    )
  beam = None
  if beam_runner:
    from sora_jax.data.beam_prepare import pipeline_options

    beam = pipeline_options(beam_runner, beam_options)
  rules = ClipConfig.of(fps, clip_frames, clip_stride, max_size, min_size, min_seconds, scene_cut)
  if default_caption is not None and not default_caption.strip():
    raise ConfigError("--caption is empty: give the text videos without a caption of their own get")
  builder = make_builder(source, output, rules, validation_fraction, captioner, beam, default_caption)
  _build(builder, source, output, beam)
  splits = written(builder, output)
  report = {
      "videos": len(builder.videos),
      "clips": sum(s["clips"] for s in splits.values()),
      "shards": [f for s in splits.values() for f in s["shards"]],
      "splits": {name: {"clips": s["clips"]} for name, s in splits.items()},
      "validation_videos": builder.validation_videos,
      **summary(builder.logs),
      "captioner": captioner,
      "beam_runner": beam_runner,
      "settings": {
          "fps": fps,
          "clip_frames": clip_frames,
          "clip_stride": clip_stride,
          "validation_fraction": validation_fraction,
          "max_size": max_size,
          "min_size": min_size,
          "min_seconds": min_seconds,
          "scene_cut": scene_cut,
      },
  }
  write_json(output / "report.json", report)
  return report


def _build(builder, source, output, beam):
  """Run the builder; a full disk and an empty dataset are one line (or, when every video was
  skipped, no dataset and a report saying why)."""
  from tensorflow_datasets.core.download import DownloadConfig

  config = DownloadConfig(beam_options=beam) if beam is not None else None
  with tempfile.TemporaryDirectory() as downloads:  # TFDS wants a download folder; nothing is downloaded
    try:
      builder.download_and_prepare(download_dir=downloads, download_config=config)
    except OSError as e:
      if e.errno != errno.ENOSPC:
        raise
      # TFDS leaves its incomplete.* folder: nothing there reads as a dataset, but it holds space.
      for partial in Path(output).glob("*/*/incomplete.*"):
        shutil.rmtree(partial, ignore_errors=True)
      raise ConfigError(
          f"--output={output}: no space left on its disk ({e.strerror}); nothing was kept"
      ) from None
    except (AssertionError, ValueError, RuntimeError):  # how TFDS refuses an empty split
      if beam is not None:
        builder.read_logs()
      if builder.videos_used and builder.videos_used == len(builder.validation_videos):
        raise ConfigError(
            f"--input={source}: {builder.videos_used} usable video(s), all taken by the validation split; "
            "nothing is left to train on (lower --validation_fraction or add videos)"
        ) from None
      if len(builder.skipped) < len(builder.videos):
        raise
      # Every video was skipped: no dataset, and the report says why.
      for partial in Path(output).glob("*/*/incomplete.*"):
        shutil.rmtree(partial, ignore_errors=True)
      return
  if beam is not None:
    builder.read_logs()


def summary(logs):
  """The report's account of the videos, from their VideoLogs (in input order)."""
  logs = sorted(logs, key=lambda log: log.index)
  skipped = [{"path": log.path, "reason": log.skipped} for log in logs if log.skipped]
  failures = [f for log in logs for f in log.caption_failures]
  return {
      "videos_used": sum(1 for log in logs if log.clips),
      "skipped_count": len(skipped),
      "skipped_reasons": dict(collections.Counter(s["reason"].split(" (")[0] for s in skipped)),
      "skipped": skipped,
      "notes": [note for log in logs for note in log.notes],
      "scene_cuts": sum(log.cuts for log in logs),
      "caption_failures_count": len(failures),
      "caption_failures": failures,
  }


def plain(record):
  """TFDS gives text as bytes and scalars as numpy ones: str, int and float instead; a stored
  clip's mp4 bytes are decoded to its "video" frames (datasets before 2.0.0 hold raw frames)."""
  record = {
      k: v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v
      for k, v in record.items()
  }
  if "mp4" in record:
    record["video"] = decode_clip(record.pop("mp4"))
  return record


def _dataset(output):
  import tensorflow_datasets as tfds

  found = prepared_dirs(output)
  if len(found) != 1:
    raise ConfigError(f"{output}: expected one dataset written by `sora-jax prepare`, found {len(found)}")
  return tfds.builder_from_directory(found[0])


def split_names(output):
  """The splits of the prepared dataset in OUTPUT ('train', and 'validation' if held out)."""
  return sorted(_dataset(output).info.splits)


def clip_source(output, split="train"):
  """A random-access grain MapDataset of the prepared clips of `split`: {"video": uint8 [T, H, W, 3],
  "caption", "source", "start", "fps"} (and the shapes' fields for a `shapes:N` dataset)."""
  import grain

  sources = _dataset(output).as_data_source()
  if split not in sources:
    raise ConfigError(
        f"{output}: no {split!r} split (it has {sorted(sources)}); "
        "prepare with --validation_fraction=F to hold out a validation split"
    )
  return grain.MapDataset.source(sources[split]).map(plain)


def videos_at(path, split="train"):
  """(name, frames) of each video at PATH, one at a time: a `sora-jax prepare` output (the clips
  of `split`, as arrays), a folder of video files or one file (frames decoded while iterated, so
  a long video never sits in memory whole)."""
  from sora_jax.data.tfds_builders import VIDEO_EXTENSIONS
  from sora_jax.data.video_io import stream_video

  path = Path(path)
  if path.is_dir() and prepared_dirs(path):
    clips = clip_source(path, split)
    return ((f"{c['source']}@{c['start']}", c["video"]) for c in (clips[i] for i in range(len(clips))))
  if path.is_dir():
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (*VIDEO_EXTENSIONS, ".gif"))
    if not files:
      raise ConfigError(f"{path}: no video files")
    return ((str(p), stream_video(p).frames) for p in files)
  if path.is_file():
    return iter([(str(path), stream_video(path).frames)])
  raise ConfigError(f"{path}: no such file or folder")
