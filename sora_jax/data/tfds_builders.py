"""TFDS builders of fixed-length video clips with captions, written as array_record shards.

`VideoCaptions` reads captioned video files (a folder with same-stem .txt captions, or a .csv /
.jsonl list of path, caption); `MovingShapes` renders the embedded moving-shapes videos
(`data/synthetic.py`). Both cut clips by the same `ClipConfig` rules and share the clip features,
so one reader (`prepare.clip_source`) serves both. Videos that cannot be used are recorded in the
builder's `skipped` list with a reason, never raised. Built without TensorFlow.
"""

import csv
import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import tensorflow_datasets as tfds

from sora_jax.config import ConfigError
from sora_jax.data import synthetic
from sora_jax.data.video_io import VideoReadError, read_video

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mov", ".mkv")
# What an unusable input raises (PyAV and file errors included); anything else is a bug and stops.
SKIPPABLE = (VideoReadError, av.error.FFmpegError, OSError, ValueError)
CLIP_FEATURES = {
    # Raw bytes, which ArrayRecord compresses per record (brotli): on the real clip 31% smaller
    # shards and 2.6x faster reads than zlib here, which leaves ArrayRecord nothing to compress.
    # Lossless, and decoding needs no image codec (no TensorFlow).
    "video": tfds.features.Tensor(shape=(None, None, None, 3), dtype=np.uint8, encoding="bytes"),
    "caption": tfds.features.Text(),
    "generated_caption": tfds.features.Text(),  # `prepare --captioner`'s ("" without one)
    "source": tfds.features.Text(),  # the video file (or synthetic index) the clip is from
    "start": np.int64,  # first frame of the clip, counted at the target fps
    "fps": np.float64,
}
SPEC_FIELDS = ("colour", "shape", "direction", "speed", "background")  # MovingShapes' extra features


@dataclasses.dataclass
class ClipConfig(tfds.core.BuilderConfig):
  """Clip rules: resample to `fps` (nearest frame), then `clip_frames` frames every `clip_stride`."""

  fps: float = 8.0
  clip_frames: int = 17
  clip_stride: int = 17

  @classmethod
  def of(cls, fps, clip_frames, clip_stride):
    # The name is the dataset's folder, OUTPUT/<builder>/<name>/<version>: it records the rules.
    return cls(
        name=f"fps{fps:g}_frames{clip_frames}_stride{clip_stride}",
        fps=fps,
        clip_frames=clip_frames,
        clip_stride=clip_stride,
    )


class Video(NamedTuple):
  frames: np.ndarray  # uint8 [T, H, W, 3]
  caption: str
  fps: float | None = None  # None: already at the target rate
  fields: dict = {}  # extra features shared by every clip of the video


def list_inputs(source):
  """-> [(video path, caption or None)] from a folder, a .csv or a .jsonl."""
  source = Path(source)
  if source.is_dir():
    videos = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    sidecar = lambda p: p.with_suffix(".txt").read_text().strip() if p.with_suffix(".txt").is_file() else None
    return [(p, sidecar(p)) for p in videos]
  if source.suffix == ".csv":
    with open(source, newline="") as f:
      rows = [(r.get("path"), r.get("caption")) for r in csv.DictReader(f)]
  elif source.suffix == ".jsonl":
    rows = [(r.get("path"), r.get("caption")) for r in map(json.loads, source.read_text().splitlines()) if r]
  else:
    raise ConfigError(f"--input={source}: expected a folder, a .csv or a .jsonl")
  return [(source.parent / p if p else None, c) for p, c in rows]


def video_fps(path):
  with av.open(str(path)) as container:
    rate = container.streams.video[0].average_rate
  return float(rate) if rate else None


def clips_of(frames, source_fps, fps, clip_frames, clip_stride):
  """Resample to `fps` (nearest frame) and cut clips; [] if the video is shorter than a clip."""
  count = int(len(frames) * fps / source_fps + 1e-6)  # the epsilon keeps n frames at an unchanged rate
  picks = np.minimum(np.round(np.arange(count) * source_fps / fps).astype(int), len(frames) - 1)
  resampled = frames[picks]
  starts = range(0, len(resampled) - clip_frames + 1, clip_stride)
  return [(s, resampled[s : s + clip_frames]) for s in starts]


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


class ClipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A 'train' split (and with `validation_fraction`, a 'validation' split of whole videos, so no
  video has clips on both sides) of the clips of `videos`: [(source name, load)], load() -> Video
  or raises one of SKIPPABLE. Subclasses make the list and may add features.

  The validation split is generated first: it takes videos in `held_out_order` until it holds
  `validation_count` usable ones (an unusable one is skipped and the next taken), and training
  gets every video it did not try. `captioner(frames, caption) -> str` (data/captioners.py)
  writes each clip's generated caption; a clip it fails on keeps none and is listed in
  `caption_failures`."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "generated_caption (prepare --captioner)"}
  EXTRA_FEATURES = {}
  # Nothing is downloaded, so no checksums file beside the code; TFDS 4.9 would otherwise look for
  # one through `importlib_resources`, which it does not install on Python >= 3.9.
  code_path = None

  def __init__(self, *, videos, validation_fraction=0.0, captioner=None, **kwargs):
    self.videos = videos
    self.captioner = captioner
    self.caption_failures = []  # {"path", "start", "reason"} per clip the captioner failed on
    self.skipped = []  # {"path", "reason"} per unusable video, filled while generating
    self.videos_used = 0
    self.held_out = validation_count(len(videos), validation_fraction)
    self.validation_videos = []  # source names of the validation split's videos
    self._tried = None  # indices the validation split tried, once it is generated
    super().__init__(**kwargs)

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
      clips = self._clips(index)
      if clips is not None:
        self.validation_videos.append(self.videos[index][0])
        yield from clips
    self._tried = tried

  def _generate_examples(self):
    if self._tried is None:
      raise RuntimeError("the validation split must be generated before the train split")
    for index in range(len(self.videos)):
      if index not in self._tried:
        yield from self._clips(index) or ()

  def _clips(self, index):
    """The (key, example) clips of video `index`, or None (recorded in `skipped`) if unusable."""
    c = self.builder_config
    source, load = self.videos[index]
    try:
      video = load()
      clips = clips_of(video.frames, video.fps or c.fps, c.fps, c.clip_frames, c.clip_stride)
      if not clips:
        raise VideoReadError(
            f"{source}: too short ({len(video.frames)} frames) "
            f"for a {c.clip_frames}-frame clip at {c.fps:g} fps"
        )
    except SKIPPABLE as e:
      self.skipped.append({"path": source, "reason": skip_reason(e)})
      return None
    self.videos_used += 1
    return [
        (
            f"{index}-{start}",
            {
                "video": clip,
                "caption": video.caption,
                "generated_caption": self._generated_caption(clip, video.caption, source, start),
                "source": source,
                "start": start,
                "fps": c.fps,
                **video.fields,
            },
        )
        for start, clip in clips
    ]

  def _generated_caption(self, frames, caption, source, start):
    if self.captioner is None:
      return ""
    try:
      text = self.captioner(frames, caption)
      if not isinstance(text, str) or not text.strip():
        raise ValueError(f"returned {text!r}, not a non-empty string")
      return text.strip()
    except Exception as e:  # noqa: BLE001 - a captioner's failure on one clip must not stop the run
      self.caption_failures.append(
          {"path": source, "start": int(start), "reason": f"{type(e).__name__}: {e}"}
      )
      return ""


def load_captioned(path, caption):
  """A listed video file and its caption; raises VideoReadError saying why it is unusable."""
  if path is None:
    raise VideoReadError("(no path): the list entry names no file")
  if not caption:
    raise VideoReadError(f"{path}: no caption")
  if path.is_file() and path.stat().st_size == 0:
    raise VideoReadError(f"{path}: empty file")
  return Video(read_video(path), caption, video_fps(path))


class VideoCaptions(ClipBuilder):
  """Clips of captioned videos: a folder of video files with same-stem .txt captions, or a .csv
  (columns path, caption) or .jsonl ({"path", "caption"}) list, paths relative to the list."""

  def __init__(self, *, inputs, **kwargs):
    videos = [
        (str(path), functools.partial(load_captioned, path, caption)) for path, caption in list_inputs(inputs)
    ]
    super().__init__(videos=videos, **kwargs)


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
