from pathlib import Path

import numpy as np
import pytest

from sora_jax.data.synthetic import make_spec, render
from sora_jax.data.video_io import VideoReadError, read_video, write_video

MMCV_TEST = Path(__file__).resolve().parent / "data" / "mmcv_test.mp4"  # licence: tests/data/README.md


def _video(t, h, w):
  spec = make_spec("cyan", "circle", "right", num_frames=t, height=h, width=w, background="textured")
  return render(spec)


@pytest.mark.parametrize(
    "ext,shape", [(".mp4", (9, 32, 48)), (".mp4", (5, 33, 47)), (".gif", (9, 33, 47)), (".png", (1, 33, 47))]
)
def test_round_trip_keeps_size(tmp_path, ext, shape):
  video = _video(*shape)
  path = tmp_path / "sub" / f"clip{ext}"
  write_video(path, video)
  back = read_video(path)
  assert back.shape == (*shape, 3) and back.dtype == np.uint8
  assert np.abs(back.astype(int) - video).mean() < 6
  assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_gif_keeps_repeated_frames(tmp_path):
  video = np.repeat(_video(1, 16, 16), 4, axis=0)
  write_video(tmp_path / "static.gif", video)
  assert read_video(tmp_path / "static.gif").shape == (4, 16, 16, 3)


def test_max_frames(tmp_path):
  write_video(tmp_path / "a.mp4", _video(9, 32, 32))
  assert read_video(tmp_path / "a.mp4", max_frames=4).shape == (4, 32, 32, 3)


def test_write_validation(tmp_path):
  video = _video(3, 16, 16)
  with pytest.raises(ValueError, match=".avi"):
    write_video(tmp_path / "a.avi", video)
  with pytest.raises(ValueError, match="1 frame"):
    write_video(tmp_path / "a.png", video)
  with pytest.raises(ValueError, match="uint8"):
    write_video(tmp_path / "a.mp4", video.astype(np.float32) / 255)
  with pytest.raises(ValueError, match="uint8"):
    write_video(tmp_path / "a.mp4", video[0])
  assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
  import sora_jax.data.video_io as vio

  def boom(path, frames, fps):
    Path(path).write_bytes(b"partial")
    raise RuntimeError("disk full")

  monkeypatch.setattr(vio, "write_mp4", boom)
  with pytest.raises(RuntimeError):
    write_video(tmp_path / "a.mp4", _video(2, 16, 16))
  assert list(tmp_path.iterdir()) == []


def test_chunks_stream_into_one_mp4_and_the_last_frames_read_back(tmp_path):
  video = _video(9, 16, 24)
  write_video(tmp_path / "a.mp4", iter([video[:4], video[4:]]))
  whole = read_video(tmp_path / "a.mp4")
  assert whole.shape == (9, 16, 24, 3)
  np.testing.assert_array_equal(read_video(tmp_path / "a.mp4", last=3), whole[-3:])
  assert read_video(tmp_path / "a.mp4", last=2, size=(8, 32)).shape == (2, 8, 32, 3)


@pytest.mark.parametrize(
    "path, frames, message",
    [("x.xyz", 1, "unsupported video extension '.xyz'"), ("x.png", 5, ".png holds exactly 1 frame, got 5")],
)
def test_outputs_are_checked_before_any_work(path, frames, message):
  from sora_jax.data.video_io import check_output

  with pytest.raises(ValueError, match=message):
    check_output(path, frames)
  check_output("x.mp4", 5)


@pytest.mark.parametrize("content", [None, b"", b"not a video"])
def test_read_errors(tmp_path, content):
  path = tmp_path / "bad.mp4"
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(VideoReadError, match="bad.mp4: "):
    read_video(path)


def test_reference_video():
  assert read_video(MMCV_TEST).shape == (168, 240, 294, 3)


def _encode(path, frames, times_ms=None, rotation=0):
  """An H.264 mp4 of `frames`, at 30 fps or at the given timestamps (a variable rate), with a
  display-matrix rotation tag as phones write one."""
  import fractions

  import av

  with av.open(str(path), "w") as container:
    stream = container.add_stream("libx264", rate=30)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv444p"
    stream.options = {"qp": "0"}
    if rotation:
      stream.set_display_rotation(rotation)
    if times_ms is not None:
      stream.codec_context.time_base = fractions.Fraction(1, 1000)
    for i, image in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(image, format="rgb24")
      if times_ms is not None:
        frame.pts, frame.time_base = times_ms[i], fractions.Fraction(1, 1000)
      container.mux(stream.encode(frame))
    container.mux(stream.encode())


def test_a_variable_frame_rate_is_resampled_by_time(tmp_path):
  """Ten frames at irregular times over 1 s (bursts and gaps): the stream comes out at its nominal
  30 fps with each frame at its time, so 8 fps clips pick frames by time, not by index."""
  from sora_jax.data.clips import cut_clips
  from sora_jax.data.video_io import stream_video

  times = [0, 33, 66, 100, 300, 333, 366, 600, 633, 1000]
  frames = np.stack([np.full((16, 32, 3), 20 * i, np.uint8) for i in range(len(times))])
  _encode(tmp_path / "vfr.mp4", frames, times)
  stream = stream_video(tmp_path / "vfr.mp4")
  grid = [int(round(f[0, 0, 0] / 20)) for f in stream.frames]
  assert stream.fps == 30 and len(grid) == 31  # slots 0..30: frame 9 lands on slot 30
  assert grid[:4] == [0, 1, 2, 3] and grid[4:9] == [3] * 5 and grid[9] == 4 and grid[30] == 9
  stream = stream_video(tmp_path / "vfr.mp4")
  (_, clip), = cut_clips(stream.frames, stream.fps, 8.0, 5, 5)
  # Targets at 0, .125, .25, .375, .5 s: the frame on screen at each time (frame 3 from 0.1 to
  # 0.3 s, frame 6 from 0.366 to 0.6 s). By index at the 14.3 fps average it was frames 0, 2, 4, 5, 7.
  assert [int(round(f[0, 0, 0] / 20)) for f in clip] == [0, 3, 3, 6, 6]


@pytest.mark.parametrize("rotation,turns", [(90, 1), (-90, -1), (180, 2)])
def test_a_rotation_tag_is_applied(tmp_path, rotation, turns):
  """A phone's portrait video: landscape frames plus a display-matrix rotation; read upright,
  as players show it, by every reader."""
  from sora_jax.data.video_io import stream_video

  image = np.zeros((16, 32, 3), np.uint8)
  image[:, :8] = 255  # a white band on the left of the stored frame
  _encode(tmp_path / "phone.mp4", np.stack([image] * 3), rotation=rotation)
  expected = np.rot90(image, turns)
  for frames in (read_video(tmp_path / "phone.mp4"), list(stream_video(tmp_path / "phone.mp4").frames)):
    assert frames[0].shape == expected.shape
    assert np.abs(frames[0].astype(int) - expected).mean() < 3
