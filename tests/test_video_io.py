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
