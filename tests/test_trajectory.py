"""Tora: trajectories to displacement maps and motion tokens, the curved shapes tracks and their
error, the fuser's identity at init, packed equals alone with trajectories, and `sora-jax
finetune` / `sample --trajectory` with their one-line errors."""

import dataclasses
import json
import re
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

from sora_jax.adapters import Adapter, Tora, apply_adapters, join, new_params
from sora_jax.cli import run
from sora_jax.config import ConfigError
from sora_jax.data import synthetic, trajectory
from sora_jax.data.video_io import read_video
from sora_jax.evaluation.shapes import centroids, trajectory_error
from sora_jax.generate import Pipeline, Request
from sora_jax.models.motion import MotionExtractor, MotionFuser, block_level, fuser_groups, group_norm
from sora_jax.train.checkpoint import Checkpointer
from tests.helpers import init_params, model_inputs, packed, random_example, tiny_dit

ROOT = Path(__file__).resolve().parents[1]
TORA = f"--config={ROOT / 'configs' / 'finetune' / 'tora.py'}"
TINY = f"--config={ROOT / 'configs' / 'shapes.py'}:tiny"
MOTION_DIM = 8


def test_points_spread_evenly_over_the_frames():
  track = trajectory.interpolate(np.array([[0.0, 0.0], [4.0, 8.0], [4.0, 0.0]]), 9)  # (y, x)
  np.testing.assert_allclose(track[[0, 2, 4, 6, 8]], [[0, 0], [2, 4], [4, 8], [4, 4], [4, 0]])


def test_displacement_maps_of_known_points():
  h = w = 40
  track = np.array([[10.0, 10.0], [10.0, 12.0], [13.0, 12.0]], np.float32)  # (y, x) per frame
  maps = trajectory.displacement_maps([track], h, w, sigma=0.1)
  unit = trajectory.MOTION_UNIT * 40
  # Each frame's move out of it, written where the point is (peak-normalised: the move itself
  # there), (dy, dx); the last frame repeats the move into it.
  # The third channel, presence: the Gaussian itself, 1 at the point.
  np.testing.assert_allclose(maps[0, 10, 10], [0.0, 2.0 / unit, 1.0], rtol=1e-6)
  np.testing.assert_allclose(maps[1, 10, 12], [3.0 / unit, 0.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(maps[2, 13, 12], [3.0 / unit, 0.0, 1.0], rtol=1e-6)
  # One std (0.1 x 40 = 4 pixels) away: exp(-1/2) of it.
  np.testing.assert_allclose(maps[0, 14, 10], np.array([0.0, 2.0 / unit, 1.0]) * np.exp(-0.5), rtol=1e-5)
  two = trajectory.displacement_maps([track, track], h, w, sigma=0.1)
  np.testing.assert_allclose(two[..., :2], 2 * maps[..., :2])  # moves add up; presence is the largest
  np.testing.assert_allclose(two[..., 2], maps[..., 2])
  still = trajectory.displacement_maps([track[:1]], h, w, sigma=0.1)
  assert still.shape == (1, h, w, 3) and not still[..., :2].any()  # one frame: no move, but placed
  assert still[0, 10, 10, 2] == 1.0


def test_dense_flow_covers_the_shape_where_it_is():
  spec = synthetic.make_spec("red", "square", "right", num_frames=5, height=32, width=32)
  masks = synthetic.shape_masks(spec)
  maps = trajectory.dense_maps(masks, synthetic.track(spec))
  step = synthetic.track(spec)[1] - synthetic.track(spec)[0]  # a square's centroid is its centre
  for t in (0, 4):
    expected = np.broadcast_to([*(step / (0.05 * 32)), 1.0], (masks[t].sum(), 3))
    np.testing.assert_allclose(maps[t][masks[t]], expected, rtol=1e-5)
    assert not maps[t][~masks[t]].any()


def test_conv_tokens_are_causal_latent_groups():
  maps = np.zeros((9, 16, 16, 3), np.float32)
  maps[5:] = 1.0  # frames 5..8: the third latent group (frames 5-8) only
  tokens = trajectory.conv_tokens(maps, (1, 2, 2))
  assert tokens.shape == (3 * 1 * 1, 4 * 4 * 4 * 3)  # grid (3, 1, 1): 4 frames x 4 x 4 pooled x 3
  assert not tokens[0].any() and not tokens[1].any() and (tokens[2] == 1.0).all()


def test_flow_video_is_white_at_rest_and_hued_by_direction():
  maps = np.zeros((2, 8, 8, 3), np.float32)
  maps[1, :, :4] = (0.0, 10.0, 0.0)  # right: red
  maps[1, :, 4:] = (-10.0, 0.0, 0.0)  # up: hue 1/4 (chartreuse)
  maps[0, 0, 0, 2] = 1.0  # a point at rest: grey
  video = trajectory.flow_video(maps)
  assert (video[0, 1:] == 255).all()
  np.testing.assert_array_equal(video[0, 0, 0], [128, 128, 128])
  np.testing.assert_array_equal(video[1, 0, 0], [255, 0, 0])
  np.testing.assert_array_equal(video[1, 0, 7], [128, 255, 0])


def test_curved_tracks_stay_in_frame_and_name_no_direction():
  for kind in synthetic.TRACKS[1:]:
    for i in range(5):
      spec = synthetic.sample_spec(np.random.default_rng([kind == "circle", i]), frames=(17,), tracks=(kind,))
      path = synthetic.track(spec)
      assert len(path) == 17 and spec.path and spec.direction == ""
      assert (path >= spec.radius - 1e-6).all()
      assert (path <= np.array([spec.height, spec.width]) - 1 - spec.radius + 1e-6).all()
      text = synthetic.caption(spec)
      assert text.startswith(f"a {spec.colour} {spec.shape} moves") and not any(
          phrase in text for phrase in synthetic.DIRECTION_PHRASES.values() if phrase != "up"
      )
      video = synthetic.render(spec)
      centres = centroids(synthetic.shape_masks(spec))  # a triangle's sits below its box centre
      error, seen = trajectory_error(video, spec.colour, centres)
      assert seen == 1.0 and error < 0.01, (kind, error)  # the true video follows its own path
      assert trajectory_error(video, spec.colour, centres[::-1])[0] > error


def _motion_batch(with_motion=(True, False)):
  rng = np.random.default_rng(0)
  examples = [random_example(rng, (2, 2, 2)), random_example(rng, (1, 2, 2), "a blue square")]
  for ex, given in zip(examples, with_motion):
    n = len(ex["tokens"])
    ex["motion"] = (
        rng.normal(size=(n, MOTION_DIM)).astype(np.float32)
        if given
        else np.zeros((n, MOTION_DIM), np.float32)
    )
  batch, places = packed(examples)
  return examples, batch, places, np.full(batch["grid"].shape[:2], 0.5, np.float32)


@pytest.mark.parametrize("scan, levels", [(False, 1), (True, 1), (False, 3), (True, 3)])
def test_fuser_is_the_identity_at_init_and_for_zero_motion(scan, levels):
  _, batch, _, t = _motion_batch()
  model = tiny_dit(scan_layers=scan, attention_patterns=("full",), motion_levels=levels)
  base = nn.meta.unbox(init_params(model, batch, perturb=True))
  full = model.init(jax.random.key(1), *model_inputs(batch, t), None, batch["motion"])["params"]
  extra = nn.meta.unbox(new_params(full, base))
  names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(extra)}
  assert any("motion_extractor" in n for n in names) and any("motion_fuser" in n for n in names)
  assert sum(f"level_{levels - 1}_out" in n for n in names) == (levels > 1)
  y_base = model.apply({"params": base}, *model_inputs(batch, t))
  y_init = model.apply({"params": join(base, extra)}, *model_inputs(batch, t), None, batch["motion"])
  np.testing.assert_array_equal(np.asarray(y_init), np.asarray(y_base))  # gamma, beta = 0
  moved = jax.tree.map(lambda a: a + 0.1 * np.random.default_rng(2).normal(size=a.shape), extra)
  y_moved = model.apply({"params": join(base, moved)}, *model_inputs(batch, t), None, batch["motion"])
  y_zero = model.apply({"params": join(base, moved)}, *model_inputs(batch, t), None, 0 * batch["motion"])
  assert float(np.abs(np.asarray(y_moved - y_base)).max()) > 1e-3
  np.testing.assert_array_equal(np.asarray(y_zero), np.asarray(y_base))  # no motion: the base exactly
  # The adapter's weight scales the fusers' gamma and beta: 0 turns the control off.
  tora = Adapter("tora", tora=Tora("conv", 0.06))
  off = model.apply({"params": tora.merged(base, moved, 0.0)}, *model_inputs(batch, t), None, batch["motion"])
  np.testing.assert_array_equal(np.asarray(off), np.asarray(y_base))
  np.testing.assert_array_equal(
      np.asarray(
          model.apply({"params": tora.merged(base, moved)}, *model_inputs(batch, t), None, batch["motion"])
      ),
      np.asarray(y_moved),
  )


@pytest.mark.parametrize("levels", [1, 2])
def test_packed_with_and_without_trajectories_equals_each_alone(levels):
  examples, batch, places, t = _motion_batch()
  model = tiny_dit(motion_levels=levels)
  params = init_params(model, batch, perturb=True)
  full = model.init(jax.random.key(1), *model_inputs(batch, t), None, batch["motion"])["params"]
  extra = jax.tree.map(lambda a: a + 0.1, nn.meta.unbox(new_params(full, nn.meta.unbox(params))))
  params = join(nn.meta.unbox(params), extra)
  out = model.apply({"params": params}, *model_inputs(batch, t), None, batch["motion"])
  for ex, (r, _, offset) in zip(examples, places):
    alone, _ = packed([ex])
    y = model.apply({"params": params}, *model_inputs(alone, t[:, :4]), None, alone["motion"])
    n = len(ex["tokens"])
    np.testing.assert_allclose(np.asarray(out[r, offset : offset + n]), np.asarray(y[0, :n]), atol=2e-5)


def test_hierarchical_extractor_gives_each_run_of_blocks_its_level():
  assert [block_level(i, 4, 2) for i in range(4)] == [0, 0, 1, 1]
  assert [block_level(i, 3, 3) for i in range(3)] == [0, 1, 2]
  assert [block_level(i, 3, 1) for i in range(3)] == [0, 0, 0]
  extractor = MotionExtractor(16, levels=3)
  motion = np.random.default_rng(0).normal(size=(1, 5, MOTION_DIM)).astype(np.float32)
  params = extractor.init(jax.random.key(0), motion)
  features = extractor.apply(params, motion)
  assert len(features) == 3 and all(f.shape == (1, 5, 16) for f in features)
  assert float(np.abs(np.asarray(features[2] - features[1])).min()) > 0  # each level adds its own
  for f in extractor.apply(params, 0 * motion):  # no trajectory: zero features at every level
    np.testing.assert_array_equal(np.asarray(f), 0.0)


def test_group_norm_is_per_token():
  h = np.random.default_rng(0).normal(size=(1, 3, 8)).astype(np.float32)
  one = np.asarray(group_norm(h[:, :1], 2))
  np.testing.assert_allclose(np.asarray(group_norm(h, 2))[:, :1], one, atol=1e-6)
  np.testing.assert_allclose(one.reshape(2, 4).mean(-1), 0.0, atol=1e-6)


@pytest.mark.parametrize("width, groups", [(16, 8), (32, 16), (48, 16), (128, 32)])
def test_fuser_gamma_acts_at_every_width(width, groups):
  # With a channel a group (32 groups at width <= 32) the norm is 0 and gamma would do nothing.
  assert fuser_groups(width) == groups
  rng = np.random.default_rng(0)
  h, feature = (rng.normal(size=(1, 3, width)).astype(np.float32) for _ in range(2))
  fuser = MotionFuser()
  kernel = np.zeros_like(
      nn.meta.unbox(fuser.init(jax.random.PRNGKey(0), h, feature))["params"]["gamma_beta"]["kernel"]
  )
  kernel[:, :width] = 0.1  # gamma only; beta stays 0
  assert (
      float(
          np.abs(
              np.asarray(fuser.apply({"params": {"gamma_beta": {"kernel": kernel}}}, h, feature)) - h
          ).min()
      )
      > 0
  )


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"trajectories": [[[1, 2], [3', "not JSON"),
        ('{"points": []}', 'no "trajectories" key'),
        ("[[[1, 2]]]", r"trajectory 0 has 1 point\(s\); it needs at least 2"),
        ("[[1, 2], [16, 3]]", r"point 1 \(x=16, y=3\) lies outside the 16x16 frame"),
        ('[[[1, 2], ["a", 3]]]', r"trajectory 0 is not a list of \[x, y\] number pairs"),
        ("[]", "give a non-empty list of trajectories"),
    ],
)
def test_bad_trajectory_files_are_one_line(tmp_path, content, message):
  path = tmp_path / "traj.json"
  path.write_text(content)
  with pytest.raises(ConfigError, match=message):
    trajectory.read_trajectories(path, 5, 16, 16)
  path.write_text('{"trajectories": [[[0, 0], [15, 15]], [[15, 0], [0, 15]]]}')
  first, second = trajectory.read_trajectories(path, 5, 16, 16)
  np.testing.assert_allclose(first[[0, 2, 4]], [[0, 0], [7.5, 7.5], [15, 15]])
  np.testing.assert_allclose(second[0], [0, 15])  # (x, y) in the file, (y, x) inside


def test_tora_adapter_settings_are_checked():
  from configs.shapes import get_config
  from sora_jax.config import validate

  c = get_config("tiny")
  c.adapter.kind = "tora"
  validate(c)
  assert Adapter.of(c).tora.extractor == "vae"
  for key, value, message in (
      ("extractor", "flow", "adapter.extractor='flow'; choose from"),
      ("sigma", 0.0, "adapter.sigma=0.0"),
      ("dense_share", 2.0, "adapter.dense_share=2.0 is a share"),
      ("levels", 0, r"adapter.levels=0: the motion extractor's levels run from 1"),
      ("levels", c.model.depth + 1, rf"to model.depth={c.model.depth} \(one per block\)"),
  ):
    bad = c.copy_and_resolve_references()
    bad.adapter[key] = value
    with pytest.raises(ConfigError, match=message):
      validate(bad)
  bad = c.copy_and_resolve_references()
  bad.sample.trajectory_guidance = "motion"
  with pytest.raises(ConfigError, match="sample.trajectory_guidance='motion'; choose joint or caption"):
    validate(bad)
  bad = c.copy_and_resolve_references()
  bad.data.latents = "/somewhere"
  with pytest.raises(ConfigError, match="data.latents / data.clips carry no tracks"):
    validate(bad)


def test_finetune_tora_and_sample_along_a_trajectory(tmp_path, capsys):
  base, ft = tmp_path / "base", tmp_path / "tora"
  run(["sora-jax", "train", TINY, f"--workdir={base}", "--config.sample.eval_modes=none"])
  run(
      [
          "sora-jax",
          "finetune",
          f"--base={base}",
          TORA,
          f"--workdir={ft}",
          "--config.adapter.extractor=conv",
          "--config.adapter.levels=2",  # Tora's hierarchy: the export and --adapter rebuild it
          "--config.train.steps=2",
          "--config.data.num_examples=8",
          "--config.sample.adapter_eval_seeds=1",
      ]
  )
  report = json.loads((ft / "finetune_eval.json").read_text())
  assert report["adapter"]["videos"] == report["base"]["videos"] == 16
  assert "trajectory_error" in report["adapter"] and 0 < report["adapter_share"] < 1
  ckpt = Checkpointer(ft / "checkpoints" / "adapter")
  saved = ckpt.restore_saved()
  ckpt.close()
  names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(saved["params"])}
  assert names and all("motion_" in n for n in names)  # the extractor and fusers, no base weight

  traj = tmp_path / "traj.json"
  traj.write_text('{"trajectories": [[[3, 3], [12, 8], [4, 12]]]}')
  out = tmp_path / "out.mp4"
  sample = ["sample", f"--workdir={base}", "--prompt=a red circle moves", f"--output={out}"]
  run(["sora-jax", *sample, f"--adapter={ft}", f"--trajectory={traj}", "--draw_trajectory"])
  video = read_video(str(out))
  assert video.shape == (5, 16, 16, 3)
  # An export carries the adapter's modules and settings: its samples along the path are the same.
  exported, a, b = tmp_path / "export", tmp_path / "a.gif", tmp_path / "b.gif"
  run(["sora-jax", "export", f"--workdir={base}", f"--adapter={ft}", f"--output={exported}"])
  run(
      [
          "sora-jax",
          "sample",
          f"--model={exported}",
          "--prompt=a red circle moves",
          f"--output={a}",
          f"--trajectory={traj}",
      ]
  )
  run(["sora-jax", *sample[:-1], f"--output={b}", f"--adapter={ft}", f"--trajectory={traj}"])
  assert a.read_bytes() == b.read_bytes()
  # Guidance's unconditional pass drops the trajectory ("joint") or keeps it ("caption"); a
  # request without one samples as the base does.
  pipe = apply_adapters(Pipeline.load(str(base)), [str(ft)])
  # A few tiny steps leave the adaLN gates, the output layer and the fusers near zero: both moved here, so
  # the trajectory shows in the pixels (the base's gates alike, for the comparison without one).
  noise = lambda x: 0.3 * np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
  nudge = lambda path, x: x + noise(x) if re.search("motion_|adaLN|final", jax.tree_util.keystr(path)) else x
  moved = lambda p: dataclasses.replace(p, dit_params=jax.tree_util.tree_map_with_path(nudge, p.dit_params))
  pipe = moved(pipe)
  path = tuple(trajectory.read_trajectories(traj, 5, 16, 16))
  ask = lambda p, tracks: p.sample(
      [Request("a red circle moves", 5, 16, 16, trajectories=tracks)], steps=2, guidance=3.0, seed=0
  )[0]
  caption_only = dataclasses.replace(pipe, config=pipe.config.copy_and_resolve_references())
  caption_only.config.sample.trajectory_guidance = "caption"
  assert not np.array_equal(ask(pipe, path), ask(caption_only, path))
  np.testing.assert_array_equal(ask(pipe, ()), ask(moved(Pipeline.load(str(base))), ()))
  capsys.readouterr()  # the runs' progress
  for argv, message in (
      ([f"--trajectory={traj}"], "a trajectory needs a Tora adapter"),
      ([f"--adapter={ft}", "--draw_trajectory"], "--draw_trajectory draws the path of --trajectory"),
      ([f"--adapter={ft}", f"--trajectory={traj}", "--loop"], "does not combine with --loop"),
      ([f"--adapter={ft}", f"--trajectory={tmp_path / 'none.json'}"], "cannot read it"),
  ):
    with pytest.raises(SystemExit) as e:
      run(["sora-jax", *sample, *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
