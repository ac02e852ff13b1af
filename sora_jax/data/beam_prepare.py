"""`sora-jax prepare --beam_runner=...`: the same clips dataset, built as an Apache Beam pipeline.

TFDS writes a dataset from a Beam PCollection as it does from a generator (its BeamWriter: the
same features, shards and dataset_info), so a corpus too large for one machine is prepared on
Dataflow, Flink or Spark with the code that prepares a folder locally. Each video is one Beam
element: `tfds_builders.video_clips` decodes it and cuts its clips, exactly as the plain build
does, and its `VideoLog` (clips, why it was skipped, notes, cuts, caption failures) goes to a side
output. The logs of every worker are gathered into one list, which decides the validation split
(the first usable videos in `held_out_order`, the plain build's rule) and is written beside the
dataset for `prepare` to merge into report.json: bad files are skipped and listed across workers.
"""

import dataclasses
import json
import shlex

from etils import epath

from sora_jax.config import ConfigError
from sora_jax.data.tfds_builders import MovingShapes, VideoCaptions, VideoLog, held_out_order, video_clips

LOGS_FILE = ".video_logs.json"  # under OUTPUT while the pipeline runs; prepare removes it


def pipeline_options(runner, options=""):
  """Beam PipelineOptions for `--beam_runner=NAME --beam_options="--flag=value ..."`."""
  try:
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners import create_runner
  except ImportError:
    raise ConfigError(
        f"--beam_runner={runner}: Apache Beam is not installed (pip install -e '.[beam]')"
    ) from None
  try:
    create_runner(runner)
  except ValueError as e:
    raise ConfigError(f"--beam_runner={runner}: {e}") from None
  return PipelineOptions([f"--runner={runner}", *shlex.split(options)])


def held_out(logs, sources, count):
  """Indices of the validation split's videos: the first `count` usable ones (a clip or more)
  in `held_out_order`. `logs`: {index: VideoLog}."""
  usable = [i for i in held_out_order(sources) if logs[i].clips]
  return set(usable[:count])


class _VideoClips:
  """A Beam DoFn body: one video index -> its (index, key, example) clips, and its log on the
  'log' output. The captioner is loaded by name on each worker, once."""

  def __init__(self, videos, config, captioner):
    self.videos, self.config, self.captioner = videos, config, captioner

  def __call__(self, index):
    import apache_beam as beam

    from sora_jax.data.captioners import load_captioner

    source, load = self.videos[index]
    log = VideoLog(index, source)
    captioner = load_captioner(self.captioner) if self.captioner else None
    for key, example in video_clips(index, source, load, self.config, captioner, log):
      yield index, key, example
    yield beam.pvalue.TaggedOutput("log", dataclasses.asdict(log))


def _write_logs(logs, path):
  epath.Path(path).write_text(json.dumps(sorted(logs, key=lambda log: log["index"])))


class OnBeam:
  """Mixin for a ClipBuilder: its splits as PCollections of one Beam pipeline. After the run,
  `read_logs()` fills the builder's `logs` and `validation_videos` as the plain build does."""

  def __init__(self, *, logs_path, **kwargs):
    self.logs_path = epath.Path(logs_path)
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager, pipeline):
    import apache_beam as beam

    decoded = (
        pipeline
        | "Videos" >> beam.Create(range(len(self.videos)))
        | "Reshuffle" >> beam.Reshuffle()  # spread the videos over the workers
        | "Clips"
        >> beam.FlatMap(_VideoClips(self.videos, self.builder_config, self.captioner)).with_outputs(
            "log", main="clips"
        )
    )
    logs = decoded.log | "Gather" >> beam.combiners.ToList()
    _ = logs | "WriteLogs" >> beam.Map(_write_logs, path=str(self.logs_path))
    example = lambda item: item[1:]  # (key, example)
    if not self.held_out:
      return {"train": decoded.clips | "Train" >> beam.Map(example)}
    sources, count = [source for source, _ in self.videos], self.held_out  # not `self`: pickled
    held = logs | "HeldOut" >> beam.Map(
        lambda logs: held_out({log["index"]: VideoLog(**log) for log in logs}, sources, count)
    )
    validation, train = decoded.clips | "Split" >> beam.Partition(
        lambda item, _, held: 0 if item[0] in held else 1, 2, held=beam.pvalue.AsSingleton(held)
    )
    return {
        "validation": validation | "Validation" >> beam.Map(example),
        "train": train | "Train" >> beam.Map(example),
    }

  def read_logs(self):
    """Load the pipeline's logs (once it has run, even if TFDS then refused an empty split)."""
    if not self.logs_path.exists():
      return
    self.logs = [VideoLog(**log) for log in json.loads(self.logs_path.read_text())]
    self.logs_path.unlink()
    sources = [source for source, _ in self.videos]
    held = held_out({log.index: log for log in self.logs}, sources, self.held_out)
    self.validation_videos = [sources[i] for i in held_out_order(sources) if i in held]


class BeamVideoCaptions(OnBeam, VideoCaptions, skip_registration=True):
  name = "video_captions"  # the plain build's folder: the datasets are the same


class BeamMovingShapes(OnBeam, MovingShapes, skip_registration=True):
  name = "moving_shapes"
