"""Read and write uint8 [T, H, W, 3] videos (.mp4 via PyAV; .gif and .png via PIL)."""

from __future__ import annotations

import collections
import fractions
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from PIL import Image

from sora_jax.files import atomic_path

_EXTENSIONS = (".mp4", ".gif", ".png")


class VideoReadError(ValueError):
  """A video could not be read; the message is one line naming the file."""


def _decoded(path):
  """(seconds, uint8 [H, W, 3] RGB upright) for each frame of the first video stream of `path`,
  decoded while the generator is iterated; what PyAV or the file raises becomes one
  VideoReadError naming it. `seconds` is the frame's timestamp (None where the file has none)."""
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise VideoReadError(f"{path}: no video stream")
      for frame in container.decode(video=0):
        yield frame.time, upright(frame)
  except VideoReadError:
    raise
  except (av.error.FFmpegError, OSError, ValueError) as e:
    raise _unreadable(path, e) from None


def upright(frame):
  """A decoded frame as RGB, turned by its display matrix as players show it: phones store a
  portrait video as landscape frames plus a rotation tag (PyAV's `rotation`, counter-clockwise
  degrees; np.rot90 turns counter-clockwise too)."""
  image = frame.to_ndarray(format="rgb24")
  turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
  return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def on_grid(timed, rate):
  """Frames at the constant `rate` from (seconds, frame) pairs: frame i lands on slot
  round((t_i - t_0) * rate), a slot no frame lands on repeats the frame before, and a second frame
  on a slot is dropped (what ffmpeg's `-vsync cfr` does). A constant-rate stream passes unchanged;
  a variable-rate one (phones, screen recordings) comes out with each frame at its time, so
  resampling by frame index afterwards is resampling by time. Frames without a time keep their
  index as their slot."""
  start = last = None
  slot = 0  # the next slot to fill
  for index, (seconds, frame) in enumerate(timed):
    if seconds is None:
      target = index
    else:
      start = seconds if start is None else start
      target = round((seconds - start) * rate)
    if target < slot:
      continue  # a slot already filled
    while last is not None and slot < target:
      yield last
      slot += 1
    yield frame
    last, slot = frame, target + 1


def read_video(path, *, max_frames: int | None = None, last: int | None = None, size=None) -> np.ndarray:
  """Decode the first video stream of `path` to uint8 [T, H, W, 3] RGB: its first `max_frames`
  or its `last` frames (only those are kept while decoding), resized to (height, width) `size`."""
  path = Path(path)
  if not path.is_file():
    raise VideoReadError(f"{path}: no such file")
  frames = collections.deque(maxlen=last)
  for _, frame in _decoded(path):
    if max_frames is not None and len(frames) >= max_frames:
      break
    frames.append(_resized(Image.fromarray(frame), size) if size else frame)
  if not frames:
    raise VideoReadError(f"{path}: no decodable frames")
  return np.stack(frames)


def capped_size(height, width, max_size):
  """(height, width) with the longer side at most `max_size` (aspect kept, even sizes when
  reduced, for yuv420p); unchanged when it already fits or max_size is None."""
  if not max_size or max(height, width) <= max_size:
    return height, width
  scale = max_size / max(height, width)
  return max(2, 2 * round(height * scale / 2)), max(2, 2 * round(width * scale / 2))


class VideoStream(NamedTuple):
  fps: float | None  # the stream's average rate
  seconds: float | None  # the container's duration, where it says
  frames: Iterator[np.ndarray]  # uint8 [H, W, 3] RGB, decoded while iterated


def stream_video(path):
  """The first video stream of `path` as a VideoStream, its frames decoded one at a time while
  iterated (memory does not grow with the video's length), upright, and at a constant rate: a
  variable-rate stream is put `on_grid` at its nominal rate (`fps`). Opening problems raise here,
  decoding problems while iterating; both as VideoReadError naming the file."""
  path = Path(path)
  if not path.is_file():
    raise VideoReadError(f"{path}: no such file")
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise VideoReadError(f"{path}: no video stream")
      stream = container.streams.video[0]
      # The nominal rate (r_frame_rate) where the file gives one: for a variable-rate stream it is
      # the finest regular grid of its frames; the average rate would merge the frames of bursts.
      rate = stream.guessed_rate or stream.average_rate
      seconds = container.duration / av.time_base if container.duration else None
  except VideoReadError:
    raise
  except (av.error.FFmpegError, OSError, ValueError) as e:
    raise _unreadable(path, e) from None
  frames = on_grid(_decoded(path), float(rate)) if rate else (f for _, f in _decoded(path))
  return VideoStream(float(rate) if rate else None, seconds, frames)


class VideoChunks:
  """A video file's frames as uint8 chunks [<= chunk, H, W, 3] (resized to `size`), decoded
  while they are iterated: a whole input passes through in the memory of one chunk."""

  def __init__(self, path, size=None, chunk: int = 16):
    self.path, self.size, self.chunk = Path(path), size, chunk

  def __iter__(self):
    buffer = []
    for _, frame in _decoded(self.path):
      buffer.append(_resized(Image.fromarray(frame), self.size))
      if len(buffer) == self.chunk:
        yield np.stack(buffer)
        buffer = []
    if buffer:
      yield np.stack(buffer)


def read_image(path, size: tuple[int, int] | None = None) -> np.ndarray:
  """Decode a picture to uint8 [H, W, 3] RGB, resized to (height, width) when `size` is given."""
  try:
    with Image.open(path) as image:
      return _resized(image, size)
  except (OSError, ValueError) as e:  # missing, truncated or not a picture
    raise _unreadable(path, e) from None


def _resized(image, size):
  image = image.convert("RGB")
  if size is not None and image.size != (size[1], size[0]):
    image = image.resize((size[1], size[0]), Image.BICUBIC)
  return np.asarray(image)


def _unreadable(path, error):
  """One readable line naming the file instead of a PyAV / PIL traceback."""
  return VideoReadError(f"{path}: {getattr(error, 'strerror', None) or error}")


def check_output(path, num_frames: int | None = None) -> None:
  """Raise one-line ValueError if `path` cannot hold a video of num_frames frames (checked
  before sampling, so a bad --output costs nothing)."""
  ext = Path(path).suffix.lower()
  if ext not in _EXTENSIONS:
    raise ValueError(f"{path}: unsupported video extension {ext!r} (use .mp4, .gif or .png)")
  if ext == ".png" and num_frames not in (None, 1):
    raise ValueError(f"{path}: .png holds exactly 1 frame, got {num_frames} (use .mp4 or .gif)")


def write_video(path, frames, fps: int = 8) -> None:
  """Write uint8 [T, H, W, 3] frames atomically; the format follows the extension.

  frames may also be an iterable of such chunks: an .mp4 is encoded as they come, so a long
  video needs the memory of one chunk.
  """
  chunks = [frames] if isinstance(frames, np.ndarray) else frames
  ext = Path(path).suffix.lower()
  if ext != ".mp4":
    chunks = [np.concatenate([_checked(c) for c in chunks])]
  check_output(path, len(chunks[0]) if ext == ".png" else None)
  with atomic_path(path) as tmp:
    _writer(ext)(tmp, (_checked(c) for c in chunks), fps)


def _checked(frames):
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
    raise ValueError(f"expected non-empty uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
  return frames


def write_mp4(target, chunks, fps, crf=18, pix_fmt=None) -> None:
  """uint8 [T, H, W, 3] chunks -> an H.264 mp4 at `target` (a path or a seekable file object);
  pix_fmt None: yuv420p (what every player shows) at even sizes, yuv444p at odd ones."""
  with av.open(target, "w", format="mp4") as container:
    stream = None
    for frames in chunks:
      if stream is None:
        _, h, w, _ = frames.shape
        stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = w, h
        # yuv420p halves chroma resolution and needs even sizes; yuv444p keeps odd sizes exact.
        stream.pix_fmt = pix_fmt or ("yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p")
        stream.options = {"crf": str(crf)}
      for f in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
    if stream is None:
      raise ValueError("expected non-empty uint8 [T, H, W, 3] frames, got no chunks")
    container.mux(stream.encode())


def _write_gif(path: str, chunks, fps: int) -> None:
  # One shared 128-colour palette, duplicated into entries 128..255: PIL drops a frame
  # identical to its predecessor, so a repeated frame flips one pixel to the duplicate
  # index (same colour) to keep the frame count exact.
  (frames,) = chunks
  t, h, w, _ = frames.shape
  q = Image.fromarray(frames.reshape(t * h, w, 3)).quantize(128, dither=Image.Dither.NONE)
  palette = (q.getpalette()[: 128 * 3] + [0] * 128 * 3)[: 128 * 3]
  idx = np.asarray(q).reshape(t, h, w).copy()
  for i in range(1, t):
    if np.array_equal(idx[i], idx[i - 1]):
      idx[i, 0, 0] ^= 128
  images = []
  for f in idx:
    im = Image.fromarray(f, mode="P")
    im.putpalette(palette * 2)
    images.append(im)
  images[0].save(
      path,
      format="GIF",
      save_all=True,
      append_images=images[1:],
      duration=round(1000 / fps),
      loop=0,
      optimize=False,
  )


def _write_png(path: str, chunks, fps: int) -> None:
  (frames,) = chunks
  Image.fromarray(frames[0]).save(path, format="PNG")


def _writer(ext):
  return {".mp4": write_mp4, ".gif": _write_gif, ".png": _write_png}[ext]
