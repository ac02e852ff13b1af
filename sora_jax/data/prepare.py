"""`sora-jax prepare`: videos + captions -> array_record shards of fixed-length clips.

Inputs: a folder of video files with same-stem .txt captions, or a .csv (columns path, caption)
or .jsonl ({"path", "caption"}) listing them (relative paths are relative to the list's folder).
Each video is decoded with PyAV, resampled to `fps`, and cut into clips of `clip_frames` frames
(1 + 4k) every `clip_stride` frames. Videos that cannot be used are skipped, counted and listed
with the reason in DIR/report.json; the run never stops on them. Shards are written under
temporary names and renamed when complete.
"""
import collections
import csv
import io
import json
import os
from pathlib import Path

import av
import numpy as np

from sora_jax.config import VAE_TEMPORAL, ConfigError
from sora_jax.data.video_io import VideoReadError, read_video
from sora_jax.files import write_json

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mov", ".mkv")


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
  duration = len(frames) / source_fps
  picks = np.minimum(np.round(np.arange(int(duration * fps)) * source_fps / fps).astype(int), len(frames) - 1)
  resampled = frames[picks]
  starts = range(0, len(resampled) - clip_frames + 1, clip_stride)
  return [(s, resampled[s:s + clip_frames]) for s in starts]


def encode_record(clip, caption, source, start, fps):
  buffer = io.BytesIO()
  np.savez(buffer, video=clip, caption=np.array(caption), source=np.array(str(source)),
           start=np.array(start), fps=np.array(fps))
  return buffer.getvalue()


def decode_record(data):
  with np.load(io.BytesIO(data)) as z:
    return {"video": z["video"], "caption": str(z["caption"]), "source": str(z["source"]),
            "start": int(z["start"]), "fps": float(z["fps"])}


def prepare(source, output, *, fps=8.0, clip_frames=17, clip_stride=17, clips_per_shard=256):
  """Write DIR/clips-NNNNN.array_record shards and DIR/report.json; returns the report."""
  from array_record.python.array_record_module import ArrayRecordWriter

  if clip_frames < 1 or (clip_frames - 1) % VAE_TEMPORAL:
    raise ConfigError(f"--clip_frames={clip_frames}: clips need 1 + {VAE_TEMPORAL}k frames")
  output = Path(output)
  output.mkdir(parents=True, exist_ok=True)
  skipped, shards, clips_written, videos_used = [], [], 0, 0
  writer, writer_tmp = None, None

  def close_shard():
    nonlocal writer
    if writer is not None:
      writer.close()
      os.replace(writer_tmp, shards[-1])
      writer = None

  for path, caption in list_inputs(source):
    try:
      if path is None:
        raise VideoReadError("(no path): the list entry names no file")
      if not caption:
        raise VideoReadError(f"{path}: no caption")
      if path.is_file() and path.stat().st_size == 0:
        raise VideoReadError(f"{path}: empty file")
      frames = read_video(path)
      clips = clips_of(frames, video_fps(path) or fps, fps, clip_frames, clip_stride)
      if not clips:
        raise VideoReadError(f"{path}: too short ({len(frames)} frames) for a {clip_frames}-frame clip at {fps:g} fps")
    except (VideoReadError, av.error.FFmpegError, OSError, ValueError) as e:
      message = str(e).splitlines()[0] if str(e) else type(e).__name__
      skipped.append({"path": str(path), "reason": message.split(": ", 1)[-1]})
      continue
    videos_used += 1
    for start, clip in clips:
      if writer is None:
        shards.append(output / f"clips-{len(shards):05d}.array_record")
        writer_tmp = str(shards[-1]) + ".tmp"
        writer = ArrayRecordWriter(writer_tmp, "group_size:1")
      writer.write(encode_record(clip, caption, path, start, fps))
      clips_written += 1
      if clips_written % clips_per_shard == 0:
        close_shard()
  close_shard()
  reasons = collections.Counter(s["reason"].split(" (")[0] for s in skipped)
  report = {"videos": videos_used + len(skipped), "videos_used": videos_used, "clips": clips_written,
            "shards": [s.name for s in shards], "skipped_count": len(skipped),
            "skipped_reasons": dict(reasons), "skipped": skipped,
            "settings": {"fps": fps, "clip_frames": clip_frames, "clip_stride": clip_stride}}
  write_json(output / "report.json", report)
  return report


def clip_source(output):
  """A random-access grain source of the prepared clips (decoded records)."""
  import grain
  shards = [str(p) for p in sorted(Path(output).glob("clips-*.array_record"))]
  return grain.MapDataset.source(grain.sources.ArrayRecordDataSource(shards)).map(decode_record)
