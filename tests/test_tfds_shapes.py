"""`sora-jax prepare --input=shapes:N`: the embedded moving shapes as a TFDS dataset of clips."""
import json

import numpy as np
import pytest

from sora_jax.cli import run
from sora_jax.data import synthetic
from sora_jax.config import default_config
from sora_jax.data.prepare import clip_source, prepared_dirs
from sora_jax.data.synthetic import ShapesSource
from sora_jax.data.tfds_builders import ClipConfig, MovingShapes


def psnr(a, b):
  return 10 * np.log10(255.0**2 / max(np.mean(np.square(a.astype(np.float64) - b)), 1e-10))


def test_shapes_dataset_holds_the_generators_clips(tmp_path):
  out = tmp_path / "shapes"
  run(["sora-jax", "prepare", "--input=shapes:3", f"--output={out}", "--clip_frames=9", "--clip_stride=4"])
  report = json.loads((out / "report.json").read_text())
  assert report["videos_used"] == 3 and report["clips"] == 9 and report["skipped"] == []  # starts 0, 4, 8
  clips = clip_source(out)
  source = ShapesSource.of_config(default_config(), 3)
  for i in range(len(clips)):
    clip = clips[i]
    example = source[int(clip["source"].rsplit("/", 1)[1])]
    spec = example["spec"]
    # Stored as H.264 (yuv444p, crf 18): above 35 dB PSNR against the generator's frames (the
    # noise-like textured backgrounds are the hardest: 38 dB), far below the VAE's own error.
    assert psnr(clip["video"], example["video"][clip["start"]:clip["start"] + 9]) > 35
    assert clip["caption"] == synthetic.caption(spec) and clip["direction"] == spec.direction
    assert (clip["colour"], clip["shape"], clip["speed"]) == (spec.colour, spec.shape, spec.speed)


@pytest.mark.parametrize("given", ["shapes:0", "shapes:many"])
def test_shapes_count_is_checked(tmp_path, capsys, given):
  with pytest.raises(SystemExit):
    run(["sora-jax", "prepare", f"--input={given}", f"--output={tmp_path}"])
  assert "expected shapes:N" in capsys.readouterr().err


def test_a_failed_build_leaves_no_dataset(tmp_path):
  """TFDS builds in an `incomplete.*` folder: an error mid-way leaves nothing that reads as data."""
  class Broken(synthetic.ShapesSource):
    def __getitem__(self, i):
      if i == 2:
        raise RuntimeError("disk gone")  # not a skippable input error: the build stops
      return super().__getitem__(i)

  builder = MovingShapes(shapes=Broken(0, 3, frames=(17,)), data_dir=tmp_path / "out",
                         config=ClipConfig.of(8.0, 17, 17), file_format="array_record")
  with pytest.raises(RuntimeError, match="disk gone"):
    builder.download_and_prepare(download_dir=tmp_path / "downloads")
  assert not prepared_dirs(tmp_path / "out") and not list((tmp_path / "out").rglob("incomplete.*"))
