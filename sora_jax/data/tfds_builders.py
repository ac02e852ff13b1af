"""TFDS builders of fixed-length video clips with captions, written as array_record shards.

`VideoCaptions` reads captioned video files (a folder with same-stem .txt captions, or a .csv /
.jsonl list of path, caption); `MovingShapes` renders the embedded moving-shapes videos
(`data/synthetic.py`). Both cut clips by the same `ClipConfig` rules and share the clip features,
so one reader (`prepare.clip_source`) serves both. Videos that cannot be used are recorded in the
builder's `skipped` list with a reason, never raised. Built without TensorFlow.
"""

import csv
import dataclasses
import errno
import functools
import hashlib
import itertools
import io
import json
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import tensorflow_datasets as tfds

from sora_jax.config import ConfigError
from sora_jax.data import synthetic
from sora_jax.data.captioners import load_captioner
from sora_jax.data.clips import capped, cut_clips, encode_clip
from sora_jax.data.video_io import VideoReadError, stream_video

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mov", ".mkv")
# What an unusable input raises (PyAV and file errors included); anything else is a bug and stops.
SKIPPABLE = (VideoReadError, av.error.FFmpegError, OSError, ValueError)
CLIP_FEATURES = {
    # The clip as the bytes of an H.264 mp4 at the target fps (data/clips.py; raw frames were
    # ~17x the input videos' size). `prepare.clip_source` decodes it back to "video" frames.
    "mp4": tfds.features.Tensor(shape=(None,), dtype=np.uint8, encoding="bytes"),
    "caption": tfds.features.Text(),
    "generated_caption": tfds.features.Text(),  # `prepare --captioner`'s ("" without one)
    "source": tfds.features.Text(),  # the video file (or synthetic index) the clip is from
    "start": np.int64,  # first frame of the clip, counted at the target fps
    "fps": np.float64,
}
SPEC_FIELDS = ("colour", "shape", "direction", "speed", "background")  # MovingShapes' extra features


@dataclasses.dataclass
class ClipConfig(tfds.core.BuilderConfig):
  """Clip rules: resample to `fps` (nearest frame), then `clip_frames` frames every `clip_stride`,
  the longer side capped at `max_size` (0: kept; the token-budget resize happens at read time).
  Filters (0: off): videos whose shorter side is under `min_size` pixels or that last under
  `min_seconds` are skipped, and no clip spans a scene cut (`clips.scene_change` > `scene_cut`)."""

  fps: float = 8.0
  clip_frames: int = 17
  clip_stride: int = 17
  max_size: int = 0
  min_size: int = 0
  min_seconds: float = 0.0
  scene_cut: float = 0.0

  @classmethod
  def of(cls, fps, clip_frames, clip_stride, max_size=0, min_size=0, min_seconds=0.0, scene_cut=0.0):
    # The name is the dataset's folder, OUTPUT/<builder>/<name>/<version>: it records the rules.
    name = f"fps{fps:g}_frames{clip_frames}_stride{clip_stride}"
    for key, value in (("max", max_size), ("min", min_size), ("minsec", min_seconds), ("cut", scene_cut)):
      name += f"_{key}{value:g}" if value else ""
    return cls(
        name=name,
        fps=fps,
        clip_frames=clip_frames,
        clip_stride=clip_stride,
        max_size=max_size,
        min_size=min_size,
        min_seconds=min_seconds,
        scene_cut=scene_cut,
    )


class Video(NamedTuple):
  frames: np.ndarray  # uint8 [T, H, W, 3]
  caption: str
  fps: float | None = None  # None: already at the target rate
  fields: dict = {}  # extra features shared by every clip of the video
  note: str | None = None  # what the report should say about it (e.g. how its caption was read)
  seconds: float | None = None  # its length, where known before decoding


def read_text(path):
  """(text, note): a caption file or list as UTF-8 (a BOM dropped), else as Windows-1252 /
  Latin-1 with a note saying so: a caption written by another tool never stops a run."""
  data = Path(path).read_bytes()
  try:
    return data.decode("utf-8-sig"), None
  except UnicodeDecodeError as e:
    try:
      text, codec = data.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:  # cp1252 leaves 5 bytes undefined; Latin-1 maps every byte
      text, codec = data.decode("latin-1"), "Latin-1"
    return text, f"{Path(path).name} is not UTF-8 (byte {data[e.start]:#x} at {e.start}): read as {codec}"


def list_inputs(source):
  """-> [(video path, caption: str, a caption file's Path, or None)] from a folder (captions in
  same-stem .txt files, read when the video is), a .csv or a .jsonl."""
  source = Path(source)
  if source.is_dir():
    videos = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    sidecar = lambda p: p.with_suffix(".txt") if p.with_suffix(".txt").is_file() else None
    return [(p, sidecar(p)) for p in videos]
  if source.suffix not in (".csv", ".jsonl"):
    raise ConfigError(f"--input={source}: expected a folder, a .csv or a .jsonl")
  text, note = read_text(source)
  if note:
    print(f"warning: {note}")
  if source.suffix == ".csv":
    rows = [(r.get("path"), r.get("caption")) for r in csv.DictReader(io.StringIO(text, newline=""))]
  else:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
      if not line.strip():
        continue
      try:
        entry = json.loads(line)
      except json.JSONDecodeError as e:
        raise ConfigError(f"--input={source}: line {number} is not JSON ({e.msg})") from None
      rows.append((entry.get("path"), entry.get("caption")))
  return [(source.parent / p if p else None, c) for p, c in rows]  # an absolute p stays as it is


def skip_reason(error):
  """The error's first line without the leading path (the report lists the path beside it)."""
  message = str(error).splitlines()[0] if str(error) else type(error).__name__
  return message.split(": ", 1)[-1]


def validation_count(videos, fraction):
  """How many of `videos` the validation split holds: a `fraction` of them, at least 1 when the
  fraction is set and there are 2 or more (never all)."""
  if fraction <= 0 or videos < 2:
    return 0
  return min(videos - 1, max(1, round(fraction * videos)))


def held_out_order(sources):
  """Indices of `sources` in the order the validation split takes them: by a hash of the source
  name, so the choice depends on the names only, not on listing order or host."""
  return sorted(range(len(sources)), key=lambda i: hashlib.sha256(sources[i].encode()).hexdigest())


@dataclasses.dataclass
class VideoLog:
  """What the report says of one video, filled while its clips are generated: merged over the
  videos by `prepare` (the plain build keeps the logs, a Beam build writes them to a file)."""

  index: int
  path: str
  clips: int = 0
  skipped: str | None = None  # why it gave no clip
  notes: list = dataclasses.field(default_factory=list)  # {"path", "note"}
  cuts: int = 0  # scene cuts found (ClipConfig.scene_cut)
  caption_failures: list = dataclasses.field(default_factory=list)  # {"path", "start", "reason"}


def video_clips(index, source, load, config, captioner, log):
  """Yield the (key, example) clips of one video as they are decoded, recording in `log`
  (a VideoLog) what the report says of it. A video with no clip is `skipped`; one that breaks after
  some keeps them, and a note says where. `captioner(frames, caption) -> str` writes each clip's
  generated caption; a clip it fails on keeps none and is listed. Used by both builds."""
  counter = {}
  try:
    video = load()
    frames = filtered(video, source, config)
    frames = (capped(f, config.max_size) for f in frames) if config.max_size else frames
    clips = cut_clips(
        frames,
        video.fps or config.fps,
        config.fps,
        config.clip_frames,
        config.clip_stride,
        counter,
        scene_cut=config.scene_cut,
    )
    for start, clip in clips:
      if not log.clips and video.note:
        log.notes.append({"path": source, "note": video.note})
      log.clips += 1
      example = {
          "mp4": np.frombuffer(encode_clip(clip, config.fps), np.uint8),
          "caption": video.caption,
          "generated_caption": generated_caption(captioner, clip, video.caption, source, start, log),
          "source": source,
          "start": start,
          "fps": config.fps,
          **video.fields,
      }
      yield f"{index}-{start}", example
    if not log.clips:
      raise VideoReadError(
          f"{source}: too short ({counter.get('frames', 0)} frames) "
          f"for a {config.clip_frames}-frame clip at {config.fps:g} fps"
          + (f" between scene cuts ({counter['cuts']})" if counter.get("cuts") else "")
      )
    log.cuts = counter.get("cuts", 0)
  except SKIPPABLE as e:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      raise  # the output's disk, not this video: the run stops (prepare says why)
    if log.clips:
      log.notes.append({"path": source, "note": f"stopped after {log.clips} clip(s): {skip_reason(e)}"})
    else:
      log.skipped = skip_reason(e)


def generated_caption(captioner, frames, caption, source, start, log):
  """The captioner's caption of a clip ("" without one, or when it fails: listed in `log`)."""
  if captioner is None:
    return ""
  try:
    text = captioner(frames, caption)
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"returned {text!r}, not a non-empty string")
    return text.strip()
  except Exception as e:  # noqa: BLE001 - a captioner's failure on one clip must not stop the run
    log.caption_failures.append({"path": source, "start": int(start), "reason": f"{type(e).__name__}: {e}"})
    return ""


class ClipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A 'train' split (and with `validation_fraction`, a 'validation' split of whole videos, so no
  video has clips on both sides) of the clips of `videos`: [(source name, load)], load() -> Video
  or raises one of SKIPPABLE. Subclasses make the list and may add features.

  The validation split holds the first `validation_count` usable videos in `held_out_order` (an
  unusable one is skipped and the next taken); training gets every other video. Here the
  validation split is generated first, trying videos in that order until it has enough, and
  training gets every video it did not try; a Beam build (data/beam_prepare.py) decides the same
  after decoding every video once. `captioner` is a name for `captioners.load_captioner`."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.1.0": "generated_caption (prepare --captioner)",
      "2.0.0": "clips stored as H.264 mp4 bytes ('mp4'), cut while decoding; max_size",
  }
  EXTRA_FEATURES = {}
  # Nothing is downloaded, so no checksums file beside the code; TFDS 4.9 would otherwise look for
  # one through `importlib_resources`, which it does not install on Python >= 3.9.
  code_path = None

  def __init__(self, *, videos, validation_fraction=0.0, captioner=None, **kwargs):
    self.videos = videos
    self.captioner = captioner
    self.logs = []  # a VideoLog per video generated, in generation order
    self.held_out = validation_count(len(videos), validation_fraction)
    self.validation_videos = []  # source names of the validation split's videos
    self._tried = None  # indices the validation split tried, once it is generated
    super().__init__(**kwargs)

  @property
  def skipped(self):
    return [{"path": log.path, "reason": log.skipped} for log in self.logs if log.skipped]

  @property
  def videos_used(self):
    return sum(1 for log in self.logs if log.clips)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({**CLIP_FEATURES, **self.EXTRA_FEATURES}),
    )

  def _split_generators(self, dl_manager):
    if not self.held_out:
      self._tried = set()
      return {"train": self._generate_examples()}
    # TFDS generates the splits in this order: validation first, so training knows what it took.
    return {"validation": self._validation_examples(), "train": self._generate_examples()}

  def _validation_examples(self):
    tried = set()
    for index in held_out_order([source for source, _ in self.videos]):
      if len(self.validation_videos) == self.held_out:
        break
      tried.add(index)
      yield from self._clips(index)
      if self.logs[-1].clips:
        self.validation_videos.append(self.videos[index][0])
    self._tried = tried

  def _generate_examples(self):
    if self._tried is None:
      raise RuntimeError("the validation split must be generated before the train split")
    for index in range(len(self.videos)):
      if index not in self._tried:
        yield from self._clips(index)

  def _clips(self, index):
    source, load = self.videos[index]
    log = VideoLog(index, source)
    self.logs.append(log)
    captioner = load_captioner(self.captioner) if self.captioner else None
    yield from video_clips(index, source, load, self.builder_config, captioner, log)


def load_captioned(path, caption, default_caption=None):
  """A listed video file and its caption (text, or its .txt file; `default_caption` where it has
  none); raises VideoReadError saying why it is unusable."""
  if path is None:
    raise VideoReadError("(no path): the list entry names no file")
  note = None
  if isinstance(caption, Path):
    caption, note = read_text(caption)
  caption = (caption or "").strip() or (default_caption or "").strip()
  if not caption:
    raise VideoReadError(f"{path}: no caption")
  if path.is_file() and path.stat().st_size == 0:
    raise VideoReadError(f"{path}: empty file")
  stream = stream_video(path)
  return Video(stream.frames, caption, stream.fps, note=note, seconds=stream.seconds)


class VideoCaptions(ClipBuilder):
  """Clips of captioned videos: a folder of video files with same-stem .txt captions, or a .csv
  (columns path, caption) or .jsonl ({"path", "caption"}) list, paths relative to the list (or
  absolute). A relative path that climbs out of the list's folder (through ..) is skipped: a list
  of relative paths describes its own folder, and one that escapes it is broken or hostile."""

  def __init__(self, *, inputs, default_caption=None, **kwargs):
    root = Path(inputs).resolve() if Path(inputs).is_dir() else Path(inputs).resolve().parent
    videos = []
    for path, caption in list_inputs(inputs):
      load = functools.partial(load_captioned, path, caption, default_caption)
      if path is not None and ".." in Path(path).parts and not Path(path).resolve().is_relative_to(root):
        load = functools.partial(_refuse, f"{path}: outside the list's folder {root}")
      videos.append((str(path), load))
    super().__init__(videos=videos, **kwargs)


def filtered(video, source, config):
  """The video's frames, or VideoReadError if a filter of `config` (ClipConfig) refuses it:
  its first frame shows the size, its frame count and rate (or the container's duration) the
  length."""
  frames = iter(video.frames)
  first = next(frames, None)
  if first is None:
    raise VideoReadError(f"{source}: no decodable frames")
  if config.min_size and min(first.shape[:2]) < config.min_size:
    raise VideoReadError(f"{source}: {first.shape[1]}x{first.shape[0]} is under --min_size={config.min_size}")
  if config.min_seconds and video.seconds is not None and video.seconds < config.min_seconds:
    raise VideoReadError(f"{source}: {video.seconds:.2f} s is under --min_seconds={config.min_seconds:g}")
  return itertools.chain([first], frames)


def _refuse(reason):
  raise VideoReadError(reason)


def load_shapes(shapes, i):
  """Video i of a synthetic.ShapesSource, with its full caption and its spec's fields."""
  example = shapes[i]
  spec = example["spec"]
  return Video(example["video"], synthetic.caption(spec), fields={k: getattr(spec, k) for k in SPEC_FIELDS})


class MovingShapes(ClipBuilder):
  """Clips of the embedded moving-shapes videos, deterministic by seed; the caption is the full
  one, and the shape's colour, shape, direction, speed and background are kept as features. The
  videos' frame rate is taken to be the target fps (motion is defined per frame)."""

  EXTRA_FEATURES = {k: tfds.features.Text() for k in SPEC_FIELDS}

  def __init__(self, *, shapes, **kwargs):
    """shapes: a synthetic.ShapesSource of the videos to write."""
    videos = [
        (f"shapes/{shapes.seed}/{i}", functools.partial(load_shapes, shapes, i)) for i in range(len(shapes))
    ]
    super().__init__(videos=videos, **kwargs)
