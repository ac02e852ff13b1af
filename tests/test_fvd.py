"""FVD with the Kinetics-400 I3D: ~0 for a set against itself, growing with noise and with blur."""
import json

import numpy as np
import pytest

from sora_jax.cli import run
from sora_jax.config import ConfigError, default_config
from sora_jax.data.synthetic import ShapesSource
from sora_jax.data.video_io import write_video
from sora_jax.evaluation.fvd import I3D, features, frechet_distance


@pytest.fixture(scope="module")
def videos():
  config = default_config()
  config.data.sizes = ((48, 48),)
  source = ShapesSource.of_config(config, 6)
  return [source[i]["video"] for i in range(6)]


@pytest.fixture(scope="module")
def i3d():
  return I3D()


def blur(video, radius):
  """A box blur over (2 radius + 1)^2 pixels, frame by frame."""
  padded = np.pad(video.astype(np.float64), ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
  h, w = video.shape[1:3]
  out = sum(padded[:, y:y + h, x:x + w] for y in range(2 * radius + 1) for x in range(2 * radius + 1))
  return (out / (2 * radius + 1) ** 2).round().astype(np.uint8)


def test_a_set_against_itself_is_zero_and_degradation_grows_it(videos, i3d):
  real = features(i3d, videos)
  assert real.shape == (6, 400) and frechet_distance(real, real) < 1e-3
  rng = np.random.default_rng(0)
  noisy = [
      frechet_distance(real, features(i3d, [np.clip(v + rng.normal(0, s, v.shape), 0, 255).astype(np.uint8)
                                            for v in videos]))
      for s in (8, 24, 64)
  ]
  blurred = [frechet_distance(real, features(i3d, [blur(v, r) for v in videos])) for r in (1, 2, 4)]
  assert 0 < noisy[0] < noisy[1] < noisy[2], noisy
  assert 0 < blurred[0] < blurred[1] < blurred[2], blurred


def test_fvd_command_reads_folders_and_refuses_short_videos(videos, tmp_path, capsys):
  for name, vids in (("real", videos[:3]), ("generated", videos[3:])):
    (tmp_path / name).mkdir()
    for i, v in enumerate(vids):
      write_video(tmp_path / name / f"{i}.mp4", v)
  out = tmp_path / "fvd.json"
  run(["sora-jax", "fvd", f"--real={tmp_path / 'real'}", f"--generated={tmp_path / 'generated'}", f"--output={out}"])
  report = json.loads(out.read_text())
  assert report["fvd"] > 0 and report["real"] == report["generated"] == 3 and report["frames"] == 16
  with pytest.raises(ConfigError, match="a video of 9 frames: FVD uses the first 16"):
    features(None, [videos[0][:9]])
