"""Real data's validation split: `prepare --validation_fraction` holds out whole videos, training
never reads them, and the fixed-noise validation loss scores them (from clips or cached latents)."""
import json

import numpy as np
import pytest

from configs.shapes import get_config
from sora_jax.cli import run
from sora_jax.config import ConfigError
from sora_jax.data import synthetic
from sora_jax.data.prepare import clip_source, prepare, split_names
from sora_jax.data.tfds_builders import ClipConfig, MovingShapes, held_out_order
from sora_jax.data.video_io import VideoReadError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  out = tmp_path_factory.mktemp("data") / "clips"
  run(["sora-jax", "prepare", "--input=shapes:8", f"--output={out}", "--clip_frames=9", "--clip_stride=4",
       "--validation_fraction=0.25"])
  return out


def test_validation_split_holds_whole_videos_that_training_never_reads(prepared):
  report = json.loads((prepared / "report.json").read_text())
  names = [f"shapes/{synthetic.ShapesSource.of_config(get_config()).seed}/{i}" for i in range(8)]
  expected = [names[i] for i in held_out_order(names)[:2]]  # 25 % of 8 videos, by name hash
  assert report["validation_videos"] == expected and split_names(prepared) == ["train", "validation"]
  train, held = clip_source(prepared), clip_source(prepared, "validation")
  assert report["splits"] == {"train": {"clips": 6 * 3}, "validation": {"clips": 2 * 3}}  # starts 0, 4, 8
  assert {held[i]["source"] for i in range(len(held))} == set(expected)
  assert not {train[i]["source"] for i in range(len(train))} & set(expected)


def test_an_unusable_held_out_video_is_skipped_and_the_next_taken(tmp_path):
  config = get_config()
  source = synthetic.ShapesSource.of_config(config, 6)
  names = [f"shapes/{source.seed}/{i}" for i in range(6)]
  broken = held_out_order(names)[0]

  class Broken(synthetic.ShapesSource):
    def __getitem__(self, i):
      if i == broken:
        raise VideoReadError(f"shapes/{self.seed}/{i}: unreadable")
      return super().__getitem__(i)

  builder = MovingShapes(shapes=Broken(source.seed, 6, **source.sample_spec_kwargs),
                         data_dir=tmp_path, config=ClipConfig.of(8.0, 9, 9), file_format="array_record",
                         validation_fraction=0.2)
  builder.download_and_prepare(download_dir=tmp_path / "dl")
  assert builder.validation_videos == [names[held_out_order(names)[1]]]
  assert [s["path"] for s in builder.skipped] == [names[broken]] and builder.videos_used == 5


def test_nothing_left_to_train_on_is_one_clear_error(tmp_path):
  from sora_jax.data.video_io import write_video

  src = tmp_path / "videos"
  src.mkdir()
  write_video(src / "good.mp4", np.zeros((9, 16, 16, 3), np.uint8), fps=8)
  (src / "empty.mp4").write_bytes(b"")
  for name in ("good", "empty"):
    (src / f"{name}.txt").write_text("a caption")
  # One of the two videos is held out; the other is unusable, whichever the hash picks first.
  with pytest.raises(ConfigError, match="1 usable video.*all taken by the validation split"):
    prepare(src, tmp_path / "out", clip_frames=9, validation_fraction=0.5)


def test_validation_loss_scores_the_held_out_clips_from_clips_and_from_cached_latents(prepared, tmp_path, capsys):
  from sora_jax.generate import Pipeline
  from sora_jax.parallel.mesh import make_mesh
  from sora_jax.train.dit_stage import train_dit
  from sora_jax.train.validation import validation_set

  workdir = tmp_path / "run"
  run(["sora-jax", "train", "--config=configs/shapes.py:tiny", f"--workdir={workdir}", "--vae_only"])
  pipe = Pipeline.load(str(workdir), dit=False)
  config = get_config("tiny")
  config.data.clips, config.validation.every = str(prepared), 3
  train_dit(config, str(workdir), pipe.vae, pipe.vae_params, make_mesh(config.mesh))
  logged = json.loads((workdir / "validation" / "step_3.json").read_text())
  assert logged["examples"] == 2 * 3 and logged["mean"] > 0  # every held-out clip, none of training's

  run(["sora-jax", "cache-latents", f"--workdir={workdir}", f"--input={prepared}", f"--output={tmp_path / 'lat'}"])
  assert "6 validation clips" in capsys.readouterr().out
  from_clips = validation_set(config, str(tmp_path / "a"), pipe.vae, pipe.vae_params)
  config.data.clips, config.data.latents = "", str(tmp_path / "lat")
  from_latents = validation_set(config, str(tmp_path / "b"), pipe.vae, pipe.vae_params)
  # The same clips, resized and encoded alike (one host keeps the order).
  assert [e["caption"] for e in from_clips] == [e["caption"] for e in from_latents]
  for a, b in zip(from_clips, from_latents):
    assert a["bucket"] == b["bucket"]
    np.testing.assert_allclose(a["latent"], b["latent"], rtol=1e-4, atol=1e-5)


def test_a_run_without_a_validation_split_is_told_how_to_make_one(tmp_path):
  from sora_jax.train.validation import validation_set

  prepare("shapes:2", tmp_path / "clips", clip_frames=9)
  config = get_config("tiny")
  config.data.clips = str(tmp_path / "clips")
  with pytest.raises(ConfigError, match="no 'validation' split.*--validation_fraction"):
    validation_set(config, str(tmp_path / "run"), None, None)
