"""CLI smoke test: train the tiny config a few steps, sample, the one-line errors, help, and a
quiet start where libtpu is installed but no TPU is present."""
import fnmatch
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from sora_jax import platforms
from sora_jax.cli import COMMANDS, CONFIGURED, FLAGS, run
from sora_jax.config import ConfigError
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
    call("train", TINY, "--workdir=run", "--config.train.peak_flops=1e12", "--config.validation.every=3",
         "--config.validation.train_sample=4", "--config.train.keep_steps=(1,)")
  finally:
    os.chdir(cwd)
  return parent / "run"


def test_validation_loss_logged_in_training_and_by_validate(workdir, capsys):
  logged = json.loads((workdir / "validation" / "step_3.json").read_text())
  assert logged["examples"] == 16 + 4 and len(logged["per_time"]) == 5
  assert "validation/loss" in scalar_tags(next((workdir / "tensorboard" / "dit").glob("events.out.tfevents.*")))
  call("validate", f"--workdir={workdir}")
  printed = json.loads(capsys.readouterr().out)
  # The same weights (the last EMA), examples and noise: the same loss, to float rounding.
  assert printed["mean"] == pytest.approx(logged["mean"], rel=1e-6)
  assert json.loads((workdir / "validation.json").read_text())["mean"] == printed["mean"]


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
  # The last 2 (keep_checkpoints) and step 1 (keep_steps) for good.
  assert sorted(p.name for p in (workdir / "checkpoints" / "dit").iterdir() if p.name.isdigit()) == ["1", "2", "3"]


def test_grid_along_a_run_samples_its_kept_checkpoints(workdir, capsys):
  call("grid", f"--workdir={workdir}")
  report = json.loads((workdir / "grid" / "grid.json").read_text())
  assert [m.split()[:2] for m in report["models"]] == [["step", "1"], ["step", "2"], ["step", "3"]]
  assert report["compute_span"] == pytest.approx(3.0) and len(report["tiles"]) == 3 * 4 * 2
  assert (workdir / "grid" / "grid.png").stat().st_size > 1000 and (workdir / "grid" / "grid.mp4").stat().st_size > 1000
  # Step 1's column is step 1's weights, not the latest.
  from sora_jax.generate import Pipeline
  first, last = Pipeline.load(str(workdir), dit_step=1), Pipeline.load(str(workdir))
  assert any((a != b).any() for a, b in zip(jax.tree.leaves(first.dit_params), jax.tree.leaves(last.dit_params)))


def test_export_round_trips_bit_exact_and_samples_the_same(workdir, tmp_path, capsys):
  from sora_jax.generate import Pipeline
  out = tmp_path / "export"
  call("export", f"--workdir={workdir}", f"--output={out}")
  index = json.loads((out / "model_index.json").read_text())
  assert index["step"] == 3 and index["transformer"] == ["sora_jax", "DiT"] and index["dtype"] == "float32"
  assert all((out / c / "config.json").is_file() for c in ("transformer", "vae", "text_encoder"))
  assert "training FLOPs" in (out / "README.md").read_text()
  live, back = Pipeline.load(str(workdir)), Pipeline.load(str(out))
  for a, b in ((live.dit_params, back.dit_params), (live.vae_params, back.vae_params)):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  videos = []
  for source in (f"--model={out}", f"--workdir={workdir}"):
    call("sample", source, "--prompt=a red circle moves left", f"--output={tmp_path / 'v.mp4'}", "--steps=2")
    videos.append(read_video(tmp_path / "v.mp4"))
  np.testing.assert_array_equal(*videos)
  capsys.readouterr()
  shutil.rmtree(out / "vae")
  with pytest.raises(SystemExit):
    call("sample", f"--model={out}", "--prompt=a red circle", f"--output={tmp_path / 'v.mp4'}")
  assert "the export has no vae/ component" in capsys.readouterr().err


def test_bfloat16_export_is_sharded_and_samples_close(workdir, tmp_path):
  from sora_jax.export import export_run
  from sora_jax.generate import Pipeline, Request
  out = tmp_path / "bf16"
  export_run(str(workdir), str(out), dtype="bfloat16", max_shard_bytes=20_000)
  index = json.loads((out / "transformer" / "diffusion_pytorch_model.safetensors.index.json").read_text())
  shards = set(index["weight_map"].values())
  assert len(shards) > 1 and all((out / "transformer" / s).is_file() for s in shards)
  live, back = Pipeline.load(str(workdir)), Pipeline.load(str(out))
  assert {x.dtype for x in jax.tree.leaves(back.dit_params)} == {np.dtype(jax.numpy.bfloat16)}
  request = [Request("a red circle moves left", 5, 16, 16, seed=0)]
  a, b = (p.sample(request, steps=2, guidance=1.0, seed=0)[0].astype(np.float32) for p in (live, back))
  assert np.abs(a - b).mean() < 4.0, np.abs(a - b).mean()  # of 255


def test_serving_artefacts_sample_like_the_pipeline(workdir, tmp_path, capsys):
  from sora_jax.export import export_run
  from sora_jax.generate import Pipeline, Request, _noise_key, request_noise
  from sora_jax.serving import Served
  out = tmp_path / "served"
  export_run(str(workdir), str(out), serving=True)
  manifest = json.loads((out / "serving" / "manifest.json").read_text())
  assert {"cpu", "tpu"} <= set(manifest["platforms"]) and manifest["jax_version"] == jax.__version__
  pipe = Pipeline.load(str(workdir))
  s = pipe.config.sample
  caption = "a red circle moves left"
  request = Request(caption, s.num_frames, s.height, s.width, seed=5)
  live = pipe.sample([request], steps=s.steps, guidance=s.guidance, seed=0)[0]
  key, index = _noise_key(0, 0, 5)
  shape = pipe._latent_shape(request)
  noise = request_noise(key, index, shape)[None]
  first = request_noise(jax.random.fold_in(key, 2**31 - 1), index, shape)[None]  # the first stage's
  served = Served(str(out)).sample([caption], noise, first)[0]
  assert served.shape == live.shape and np.abs(served.astype(int) - live.astype(int)).max() <= 2
  (out / "serving" / "denoise_step.jax").write_bytes(b"not an artefact")
  with pytest.raises(ConfigError, match="not loadable by jax"):
    Served(str(out))


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


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
  """A 9-frame 16x32 input video (the true shapes clip of a prompt)."""
  from sora_jax.data.synthetic import make_spec, render
  from sora_jax.data.video_io import write_video
  path = tmp_path_factory.mktemp("inputs") / "clip.mp4"
  write_video(path, render(make_spec("red", "circle", "right", num_frames=9, height=16, width=32)))
  return path


# Each mode once, end to end: (mode flags, frames in the output). The input clip has 9 frames.
MODE_CASES = [
    (["--image=CLIP_PNG", "--image_at=last", "--num_frames=9"], 9),
    (["--image=CLIP_PNG", "--image_at=3", "--num_frames=5"], 5),
    (["--video=CLIP", "--extend=forward", "--overlap=1", "--num_frames=5"], 9 + 4),
    (["--video=CLIP", "--extend=backward", "--overlap=1", "--num_frames=5"], 1 + 9),
    (["--connect", "CLIP", "CLIP", "--num_frames=9"], 9 + 4 + 9),
    (["--video=CLIP", "--video=CLIP", "--connect", "--num_frames=9"], 9 + 4 + 9),
    (["--loop", "--num_frames=9"], 9 + 4),
    (["--edit=CLIP", "--strength=0.5", "--num_frames=9"], 9),
    (["--long_frames=13", "--overlap=1", "--num_frames=5"], 13),
    (["--long_frames=13", "--image=CLIP_PNG", "--num_frames=5", "--overlap=1"], 13),
]


@pytest.mark.parametrize("flags, frames", MODE_CASES)
def test_every_sample_mode_from_the_command_line(flags, frames, workdir, clip, tmp_path):
  from PIL import Image
  png = tmp_path / "frame.png"
  Image.fromarray(read_video(clip)[0]).save(png)
  out = tmp_path / "out.mp4"
  flags = [f.replace("CLIP_PNG", str(png)).replace("CLIP", str(clip)) for f in flags]
  call("sample", f"--workdir={workdir}", "--prompt=a red circle moves to the right", "--height=16", "--width=32",
       "--steps=1", f"--output={out}", *flags)
  assert read_video(out).shape == (frames, 16, 32, 3)


def test_eval_scores_the_asked_modes(workdir, capsys):
  call("eval", f"--workdir={workdir}", "--steps=1", "--modes=extend_backward")
  summary = json.loads(capsys.readouterr().out)
  assert summary["extend_backward"]["n"] == 16 and "sdedit" not in summary


BAD_MODE_INPUTS = [
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--image=CLIP_MP4", "--loop", "--output=o.mp4"],
     "--image and --loop are different modes"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--image=CLIP_PNG", "--image_at=last", "--long_frames=9",
      "--output=o.mp4"], "--image with --long_frames opens the video on the picture"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--video=CLIP_MP4", "--output=o.mp4"],
     "--video needs --extend or --connect"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--connect", "CLIP_MP4", "--output=o.mp4"],
     "--connect takes 2 input video(s), got 1"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--edit=CLIP_MP4", "--strength=1.5", "--output=o.mp4"],
     "strength=1.5"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--strength=0.5", "--output=o.mp4"], "--strength goes with --edit"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--video=CLIP_MP4", "--extend=forward", "--overlap=3",
      "--num_frames=9", "--output=o.mp4"], "leaves nothing to generate"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--video=CLIP_MP4", "--extend=backward", "--overlap=3",
      "--num_frames=17", "--output=o.mp4"], "the video to extend has 9 frames; this needs at least 12"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--video=CLIP_MP4", "--extend=up", "--output=o.mp4"],
     "--extend='up'"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--edit=CLIP_MP4", "--num_frames=13", "--output=o.mp4"],
     "the video to edit has 9 frames"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--image=CLIP_PNG", "--image_at=9", "--output=o.mp4"],
     "frame 9 is outside the 5 frames"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--video=nothing.mp4", "--extend=forward", "--output=o.mp4"],
     "nothing.mp4: no such file"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--loop", "--output=o.png"], ".png holds exactly 1 frame"),
]


@pytest.mark.parametrize("argv, message", [
    (["train", TINY, "--config.data.cond.image_head=1.5", "--workdir=x"], "data.cond.image_head=1.5 is a share"),
    (["train", TINY, "--config.sample.eval_modes=fly", "--workdir=x"], "modes has 'fly'"),
    (["train", TINY, "--config.model.nope=3", "--workdir=x"], "nope"),
    (["train", TINY, "--config.sample.num_frames=6", "--workdir=x"], "1 + 4k frames"),
    (["train", TINY, "--config.sample.width=20", "--workdir=x"], "width 20 is not divisible by 16"),
    (["train", TINY, "--config.sample.first_frame=last", "--workdir=x"], "sample.first_frame='last'"),
    (["train", TINY, "--config.data.textured_fraction=1.5", "--workdir=x"], "textured_fraction=1.5 is a share"),
    (["sample", "--workdir=WORKDIR", "--prompt=", "--output=o.mp4"], "prompt is empty"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--num_frames=4", "--output=o.mp4"], "1 + 4k frames"),
    (["sample", "--workdir=EMPTY", "--prompt=a cat", "--output=o.mp4"], "no config.json"),
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--image=missing.png", "--output=o.mp4"], "missing.png"),
    # EMPTY has no run in it: these are refused before the run is loaded.
    (["sample", "--workdir=EMPTY", "--prompt=a cat", "--output=o.xyz"], "o.xyz: unsupported video extension"),
    (["sample", "--workdir=EMPTY", "--prompt=a cat", "--steps=0", "--output=o.mp4"], "--steps=0"),
    (["sample", "--workdir=EMPTY", "--prompt=a cat", "--guidance=-1", "--output=o.mp4"], "is >= 0"),
    (["eval", "--workdir=EMPTY", "--steps=-2"], "--steps=-2: the sampler needs at least 1 step"),
    # The config's default frame count (5), before any sampling.
    (["sample", "--workdir=WORKDIR", "--prompt=a cat", "--output=o.png"], "1 frame, got 5"),
    (["prepare", "--input=shapes:1", "--output=o", "--steps=3"], "not a flag of `sora-jax prepare`"),
    (["sample", TINY, "--workdir=WORKDIR", "--prompt=a cat", "--output=o.mp4"], "--config is not a flag"),
    (["sample", "--stepz=3"], "`sora-jax sample --help` lists its flags"),
    (["fly"], "give one command"),
    (["grid", "--workdir=EMPTY"], "no config.json"),
    (["export", "--workdir=WORKDIR", "--output=EMPTY"], "already exists"),
    (["export", "--workdir=WORKDIR", "--output=EMPTY/new", "--dtype=float16"], "--dtype=float16"),
    (["sample", "--model=EMPTY", "--workdir=WORKDIR", "--prompt=a", "--output=o.mp4"], "give --workdir=DIR"),
    (["grid"], "give --sweep=DIR"),
    (["train", TINY, "--config.train.keep_steps=(0,)", "--workdir=x"], "train.keep_steps=(0,)"),
] + BAD_MODE_INPUTS)
def test_bad_input_is_one_line_and_exit_2(argv, message, workdir, clip, tmp_path, capsys):
  from PIL import Image
  png = tmp_path / "frame.png"
  Image.fromarray(read_video(clip)[0]).save(png)
  argv = [a.replace("WORKDIR", str(workdir)).replace("EMPTY", str(tmp_path)).replace("CLIP_MP4", str(clip))
          .replace("CLIP_PNG", str(png)) for a in argv]
  with pytest.raises(SystemExit) as exit_info:
    call(*argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and message in err, err


def test_help_lists_the_commands(capsys):
  call("--help")  # returns: exit status 0
  out = capsys.readouterr().out
  assert all(re.search(rf"^  {name} ", out, re.M) for name in COMMANDS), out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_lists_its_flags_only(command, capsys):
  call(command, "-h")
  out = capsys.readouterr().out
  listed = set(re.findall(r"^  --(?:\[no\])?([\w.]+)", out, re.M))
  configured = {"config", "config.KEY"} if command in CONFIGURED else set()
  configured |= {"config"} if command == "sweep" else set()  # a sweep config, no overrides
  assert listed == {name for _, name, _, _, commands in FLAGS if command in commands} | configured, out


def test_help_does_no_work():
  """`--help` exits 0 without importing jax (it answers at once, on any machine)."""
  code = ("import sys; from sora_jax.cli import run; run(['sora-jax', 'sample', '--help']); "
          "sys.exit('jax' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert result.returncode == 0 and "--workdir" in result.stdout, result.stderr


@pytest.mark.parametrize("devices, cuda_plugin, expected", [
    ((), False, "cpu"),
    ((), True, "cpu"),                                  # jax[cuda] without a GPU
    (("/dev/vfio/vfio",), False, "cpu"),                # the VFIO control node alone is no device
    (("/dev/accel0",), False, None),                    # TPU v4
    (("/dev/vfio/vfio", "/dev/vfio/0"), False, None),   # TPU v5e and later
    (("/dev/nvidia0", "/dev/nvidiactl"), True, "cuda,cpu"),
    (("/dev/nvidia0",), False, None),                   # JAX's own hint to install jax[cuda]
    (("/dev/kfd",), False, None),                       # ROCm
])
def test_platforms_leave_out_only_an_absent_tpu(devices, cuda_plugin, expected, monkeypatch):
  monkeypatch.setattr(platforms.glob, "glob", lambda pattern: fnmatch.filter(devices, pattern))
  monkeypatch.setattr(platforms, "_cuda_plugin_installed", lambda: cuda_plugin)
  assert platforms.platforms_without_tpu() == expected


@pytest.mark.skipif(platforms.platforms_without_tpu() is None, reason="a TPU or a GPU: JAX's own search")
def test_starts_quietly_without_a_tpu():
  """run() picks the platforms before it imports jax: libtpu, if installed, is not started."""
  code = ("from sora_jax.cli import run\ntry:\n  run(['sora-jax', 'fly'])\nexcept SystemExit:\n  pass\n"
          "import jax; jax.devices()")
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  err = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stderr
  assert err.splitlines() == [err.strip()] and "give one command" in err, err
