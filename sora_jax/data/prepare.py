"""`sora-jax prepare`: videos + captions (or the embedded shapes) -> a TFDS dataset of clips.

--input is a folder of video files with same-stem .txt captions, a .csv (columns path, caption)
or .jsonl ({"path", "caption"}) listing them (relative paths are relative to the list's folder),
or `shapes:N` for N moving-shapes videos (the default config's seed, sizes and backgrounds).
The builders of `data/tfds_builders.py` decode each video with PyAV, resample it to `fps` and cut
clips of `clip_frames` frames (1 + 4k) every `clip_stride` frames into array_record shards under
OUTPUT/<builder>/<rules>/<version>/. Videos that cannot be used are skipped, counted and listed
with the reason in OUTPUT/report.json; the run never stops on them. TFDS writes into an
`incomplete.*` folder and renames it only once every shard and the dataset info are written, so a
killed run leaves nothing half-written that reads as a dataset. An OUTPUT that already holds a
prepared dataset is refused with one line, never overwritten or mixed with a second one.
"""
import collections
import tempfile
from pathlib import Path

import numpy as np

from sora_jax.config import VAE_TEMPORAL, ConfigError, default_config
from sora_jax.data.synthetic import ShapesSource
from sora_jax.data.tfds_builders import ClipConfig, MovingShapes, VideoCaptions
from sora_jax.files import write_json

SHAPES_INPUT = "shapes:"


def make_builder(source, output, config):
  """The TFDS builder for --input: `shapes:N`, or a folder / .csv / .jsonl of captioned videos."""
  source = str(source)
  kwargs = dict(data_dir=output, config=config, file_format="array_record")
  if source.startswith(SHAPES_INPUT):
    count = source[len(SHAPES_INPUT):]
    if not count.isdigit() or int(count) < 1:
      raise ConfigError(f"--input={source}: expected shapes:N, N >= 1 videos")
    return MovingShapes(shapes=ShapesSource.of_config(default_config(), int(count)), **kwargs)
  if not Path(source).exists():
    raise ConfigError(f"--input={source}: no such file or folder")
  return VideoCaptions(inputs=source, **kwargs)


def prepared_dirs(output):
  """Finished TFDS datasets under OUTPUT (<builder>/<rules>/<version>/, not `incomplete.*`)."""
  return [p.parent for p in Path(output).glob("*/*/*/dataset_info.json")
          if not p.parent.name.startswith("incomplete.")]


def written(builder, output):
  """(clips, shard paths relative to OUTPUT) of the built dataset; none if no video was usable."""
  if not builder.videos_used:
    return 0, []
  split = builder.info.splits["train"]
  folder = Path(builder.data_dir).relative_to(output)
  return split.num_examples, [str(folder / f) for f in split.filenames]


def prepare(source, output, *, fps=8.0, clip_frames=17, clip_stride=17):
  """Build the clips dataset under OUTPUT and write OUTPUT/report.json; returns the report."""
  if clip_frames < 1 or (clip_frames - 1) % VAE_TEMPORAL:
    raise ConfigError(f"--clip_frames={clip_frames}: clips need 1 + {VAE_TEMPORAL}k frames")
  if clip_stride < 1 or fps <= 0:
    raise ConfigError(f"--clip_stride={clip_stride} --fps={fps:g}: both must be positive")
  output = Path(output)
  if prepared_dirs(output):
    raise ConfigError(f"--output={output} already holds a prepared dataset: remove it or choose another folder")
  builder = make_builder(source, output, ClipConfig.of(fps, clip_frames, clip_stride))
  with tempfile.TemporaryDirectory() as downloads:  # TFDS wants a download folder; nothing is downloaded
    try:
      builder.download_and_prepare(download_dir=downloads)
    except (AssertionError, ValueError):  # how TFDS refuses an empty split
      if len(builder.skipped) < len(builder.videos):
        raise
      # Every video was skipped: no dataset, and the report says why.
  clips, shards = written(builder, output)
  skipped = builder.skipped
  reasons = collections.Counter(s["reason"].split(" (")[0] for s in skipped)
  report = {"videos": len(builder.videos), "videos_used": builder.videos_used, "clips": clips,
            "shards": shards, "skipped_count": len(skipped), "skipped_reasons": dict(reasons),
            "skipped": skipped, "settings": {"fps": fps, "clip_frames": clip_frames, "clip_stride": clip_stride}}
  write_json(output / "report.json", report)
  return report


def plain(record):
  """TFDS gives text as bytes and scalars as numpy ones: str, int and float instead."""
  return {k: v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v
          for k, v in record.items()}


def clip_source(output):
  """A random-access grain MapDataset of the prepared clips: {"video": uint8 [T, H, W, 3],
  "caption", "source", "start", "fps"} (and the shapes' fields for a `shapes:N` dataset)."""
  import grain
  import tensorflow_datasets as tfds
  found = prepared_dirs(output)
  if len(found) != 1:
    raise ConfigError(f"{output}: expected one dataset written by `sora-jax prepare`, found {len(found)}")
  return grain.MapDataset.source(tfds.builder_from_directory(found[0]).as_data_source()["train"]).map(plain)
