"""CLI smoke test: train the tiny config a few steps, sample, and the one-line errors."""
import json
import os
import struct
from pathlib import Path

import pytest

from sora_jax.cli import run
from sora_jax.data.video_io import read_video


TINY = f"--config={Path(__file__).resolve().parents[1] / 'configs' / 'shapes.py'}:tiny"


def call(*argv):
  run(["sora-jax", *argv])


def scalar_tags(path):
  """Scalar tags in a TensorBoard event file (TFRecord framing: length, crc, event, crc)."""
  from tensorboardX.proto import event_pb2
  data, i, tags = path.read_bytes(), 0, set()
  while i < len(data):
    n = struct.unpack("<Q", data[i:i + 8])[0]
    event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
    tags.update(v.tag for v in event.summary.value)
    i += n + 16
  return tags


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  parent = tmp_path_factory.mktemp("runs")
  cwd = os.getcwd()
  os.chdir(parent)  # a relative workdir, as users type it
  try:
    call("train", TINY, "--workdir=run", "--config.train.peak_flops=1e12")
  finally:
    os.chdir(cwd)
  return parent / "run"


def test_train_writes_checkpoints_events_samples(workdir):
  for stage in ("vae", "dit"):
    assert (workdir / "checkpoints" / stage / "3").is_dir()
    assert list((workdir / "tensorboard" / stage).glob("events.out.tfevents.*"))
  tags = scalar_tags(next((workdir / "tensorboard" / "dit").glob("events.out.tfevents.*")))
  assert {"dit/loss", "dit/lr", "dit/grad_norm", "dit/skipped_steps", "dit/steps_per_sec",
          "dit/tokens_per_sec", "dit/examples_per_sec", "dit/mfu", "dit/padding_fraction",
          "dit/examples_per_row", "dit/sample_0", "dit/sample_1"} <= tags
  assert len(list((workdir / "progress" / "step_3").glob("*.mp4"))) == 2
  summary = json.loads((workdir / "eval.json").read_text())["summary"]
  assert summary["n"] == 16 and 0.0 <= summary["colour_accuracy"] <= 1.0
  assert summary["image_to_video"]["n"] == 16 and 0.0 <= summary["image_to_video"]["direction_accuracy"] <= 1.0
  assert len(list((workdir / "samples").glob("*.mp4"))) == 16


def test_train_resumes_without_redoing_steps(workdir, capsys):
  call("train", TINY, f"--workdir={workdir}")
  assert sorted(p.name for p in (workdir / "checkpoints" / "dit").iterdir() if p.name.isdigit()) == ["2", "3"]


def test_sample_writes_exact_size(workdir, tmp_path):
  out = tmp_path / "out.mp4"
  call("sample", f"--workdir={workdir}", "--prompt=a red circle moves to the right", "--num_frames=9",
       "--height=16", "--width=32", "--steps=2", "--guidance=4", "--seed=0", f"--output={out}")
  assert read_video(out).shape == (9, 16, 32, 3)
  png = tmp_path / "still.png"
  call("sample", f"--workdir={workdir}", "--prompt=a red circle", "--prompt=a blue square", "--num_frames=1",
       "--height=16", "--width=16", "--steps=1", f"--output={png}")
  assert read_video(tmp_path / "still_0.png").shape == (1, 16, 16, 3)
  assert (tmp_path / "still_1.png").exists()
  i2v = tmp_path / "i2v.mp4"  # image-to-video from the still, resized to the asked size
  call("sample", f"--workdir={workdir}", "--prompt=a red circle moves up", f"--image={tmp_path / 'still_0.png'}",
       "--num_frames=5", "--height=16", "--width=32", "--steps=1", f"--output={i2v}")
  assert read_video(i2v).shape == (5, 16, 32, 3)


@pytest.mark.parametrize("argv, message", [
    (["train", TINY, "--config.model.nope=3", "--workdir=x"], "nope"),
    (["train", TINY, "--config.sample.num_frames=6", "--workdir=x"], "1 + 4k frames"),
    (["train", TINY, "--config.sample.width=20", "--workdir=x"], "width 20 is not divisible by 16"),
    (["train", TINY, "--config.sample.first_frame=last", "--workdir=x"], "sample.first_frame='last'"),
    (["train", TINY, "--config.data.first_frame_cond=1.5", "--workdir=x"], "data.first_frame_cond=1.5 is a share"),
    (["sample", "--workdir=WORKDIR", "--prompt=", "--output=o.mp4"], "prompt is empty"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--num_frames=4", "--output=o.mp4"], "1 + 4k frames"),
    (["sample", "--workdir=EMPTY", "--prompt=a cat", "--output=o.mp4"], "no config.json"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--image=missing.png", "--output=o.mp4"], "missing.png"),
    (["fly"], "give one command"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, workdir, tmp_path, capsys):
  argv = [a.replace("WORKDIR", str(workdir)).replace("EMPTY", str(tmp_path)) for a in argv]
  with pytest.raises(SystemExit) as exit_info:
    call(*argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and message in err, err
