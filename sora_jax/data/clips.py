"""Cutting clips out of a stream of frames, and storing each clip compressed.

`cut_clips` resamples a video to the target fps (nearest frame by index) and yields its clips as
the frames arrive, so `sora-jax prepare` holds about one clip of frames whatever the file's length
(a 2-hour 1080p film decodes in the memory of one clip). A clip is stored as the bytes of an H.264
mp4 at the target fps (`encode_clip`: crf 20 in full-resolution chroma, yuv444p: 37.7 dB PSNR at
worst and 44.4 median over 32 shapes clips, 37-47 dB on the real clips of ../shared; yuv420p lost
up to 14 dB on small coloured shapes and was no smaller; the VAE's own reconstruction error is far
larger), not as raw frames: raw uint8 frames are 10-20x the size of the videos they come from.
"""

import io

import av
import numpy as np

from sora_jax.data.video_io import VideoReadError, capped_size, write_mp4

STORED_CRF = 20  # x264's quality setting: lower keeps more, at more bytes


def scene_change(previous, frame):
  """Mean absolute difference in [0, 1] of two frames' colour thumbnails (about 32 x 32): large
  at a cut, small under motion (a moving object changes few thumbnail pixels). In colour, not
  grey: two scenes of equal brightness still differ."""
  thumbs = []
  for f in (previous, frame):
    step_y, step_x = max(1, f.shape[0] // 32), max(1, f.shape[1] // 32)
    thumbs.append(f[::step_y, ::step_x].astype(np.float32))
  return float(np.abs(thumbs[0] - thumbs[1]).mean() / 255.0)


def cut_clips(frames, source_fps, fps, clip_frames, clip_stride, counter=None, scene_cut=0.0):
  """Yield (start, uint8 [clip_frames, H, W, 3]) clips from an iterable of frames.

  Target frame k is source frame round(k * source_fps / fps), as long as k < n * fps /
  source_fps for the n frames the video has (the last source frame stands in past the end);
  clips start every `clip_stride` target frames. A clip is yielded once every frame of it is
  known to exist, so at most clip_frames + 1 frames are held. With `scene_cut` > 0, a source
  frame whose `scene_change` from the one before exceeds it is a cut: the clip being filled is
  dropped and the next starts at the cut, so no clip spans one. `counter` (a dict) receives the
  number of source frames read ("frames") and of cuts ("cuts"), for the caller's messages.
  """
  held = {}  # target index -> frame, for the targets of the clips not yet yielded
  next_target = next_start = cuts = 0
  n, last = 0, None

  def pick(k):  # the source frame of target k, computed as the whole-file resampling does
    return int(np.round(np.float64(k) * source_fps / fps))

  def ready(known):
    """Clips whose targets all lie below `known` (targets that surely exist)."""
    nonlocal next_start
    while next_start + clip_frames <= min(known, next_target):
      yield next_start, np.stack([held[k] for k in range(next_start, next_start + clip_frames)])
      next_start += clip_stride
      for k in [k for k in held if k < next_start]:
        del held[k]

  for i, frame in enumerate(frames):
    if scene_cut and last is not None and scene_change(last, frame) > scene_cut:
      cuts += 1
      yield from ready(next_target)  # clips ending before the cut: their frames all exist
      held.clear()
      next_start = next_target  # the first target at or after the cut
    n, last = i + 1, frame
    while pick(next_target) == i:
      if next_target >= next_start:
        held[next_target] = frame
      next_target += 1
    # Target k exists iff k < n * fps / source_fps: every frame read so far confirms the targets below.
    yield from ready(int(n * fps / source_fps + 1e-6))
  if counter is not None:
    counter.update(frames=n, cuts=cuts)
  count = int(n * fps / source_fps + 1e-6)
  while next_target < count:  # targets past the last frame (rounding up) take the last frame
    if next_target >= next_start:
      held[next_target] = last
    next_target += 1
  yield from ready(count)


def capped(frame, max_size):
  """uint8 [H, W, 3] with its longer side at most `max_size` (area-averaged, aspect kept)."""
  from PIL import Image

  h, w = capped_size(*frame.shape[:2], max_size)
  if (h, w) == frame.shape[:2]:
    return frame
  return np.asarray(Image.fromarray(frame).resize((w, h), Image.BOX))


def encode_clip(frames, fps):
  """uint8 [T, H, W, 3] -> the bytes of an H.264 mp4 (yuv444p: chroma at full resolution)."""
  buffer = io.BytesIO()
  write_mp4(buffer, [frames], fps, crf=STORED_CRF, pix_fmt="yuv444p")
  return buffer.getvalue()


def decode_clip(data):
  """The frames of `encode_clip`'s bytes, uint8 [T, H, W, 3]."""
  try:
    with av.open(io.BytesIO(bytes(data))) as container:
      frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
  except (av.error.FFmpegError, ValueError) as e:
    raise VideoReadError(f"a stored clip does not decode ({e})") from None
  return np.stack(frames)
