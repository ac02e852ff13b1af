"""Adapters: LoRA's identity at init and merge equality (plain and scanned blocks), the block
pattern filter (MotionLoRA), a fine-tune step that moves the adapter alone, the camera-motion
shapes and evaluator, and `sora-jax finetune` / `sample --adapter` with their one-line errors."""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.shapes import get_config
from sora_jax.adapters import Adapter, join, new_params, parse_adapter_flag
from sora_jax.cli import run
from sora_jax.config import ConfigError
from sora_jax.data.synthetic import COLOURS, ShapeSpec, ShapesSource, filmed, render
from sora_jax.evaluation.shapes import camera_of, detect_colours, eval_prompts, scale_growth, true_spec
from sora_jax.generate import Pipeline
from sora_jax.nn.lora import LORA_KEYS, LoraSpec, lora, merge
from sora_jax.train.checkpoint import Checkpointer
from sora_jax.train.finetune_stage import saved_config
from tests.helpers import init_params, model_inputs, packed, random_example, tiny_dit

ROOT = Path(__file__).resolve().parents[1]
MOTION_LORA = f"--config={ROOT / 'configs' / 'finetune' / 'motion_lora.py'}"
TINY = f"--config={ROOT / 'configs' / 'shapes.py'}:tiny"


def _batch():
  rng = np.random.default_rng(0)
  batch, _ = packed([random_example(rng, (2, 2, 2)), random_example(rng, (1, 2, 2), "a blue square")])
  return batch, np.full(batch["grid"].shape[:2], 0.5, np.float32)


@pytest.mark.parametrize("scan", [False, True])
def test_lora_is_the_base_at_init_and_merges_exactly(scan):
  batch, t = _batch()
  model = tiny_dit(scan_layers=scan)
  spec = LoraSpec(4, 8.0, (r"self_attn/(query|key|value|out)$", r"mlp/fc1$"))
  base = nn.meta.unbox(init_params(model, batch, perturb=True))
  with lora(spec):
    full = model.init(jax.random.key(1), *model_inputs(batch, t))["params"]
  extra = nn.meta.unbox(new_params(full, base))
  assert {getattr(p[-1], "key", None) for p, _ in jax.tree_util.tree_leaves_with_path(extra)} == set(
      LORA_KEYS
  )
  assert not jax.tree.leaves(new_params(base, full))  # the adapter adds params, changes none
  y_base = model.apply({"params": base}, *model_inputs(batch, t))
  with lora(spec):
    y_init = model.apply({"params": join(base, extra)}, *model_inputs(batch, t))
  np.testing.assert_array_equal(np.asarray(y_init), np.asarray(y_base))  # B = 0: exactly the base
  moved = jax.tree.map(lambda a: a + 0.05 * np.random.default_rng(2).normal(size=a.shape), extra)
  with lora(spec):
    y_lora = model.apply({"params": join(base, moved)}, *model_inputs(batch, t))
  y_merged = model.apply({"params": merge(join(base, moved), spec.scale)}, *model_inputs(batch, t))
  assert float(jnp.abs(y_lora - y_base).max()) > 1e-3
  np.testing.assert_allclose(np.asarray(y_merged), np.asarray(y_lora), atol=1e-5)


def test_block_patterns_keep_the_temporal_blocks_only():
  batch, t = _batch()
  model = tiny_dit()  # blocks 0, 1, 2: full, spatial, temporal
  adapter = Adapter("lora", LoraSpec(2, 2.0, (r"self_attn/(query|key|value|out)$",), ("temporal",)))
  trace = lambda: jax.eval_shape(lambda: model.init(jax.random.key(0), *model_inputs(batch, t))["params"])
  seen = adapter.check_targets(trace)
  assert seen == {
      r"self_attn/(query|key|value|out)$": {
          f"block_2/self_attn/{n}" for n in ("query", "key", "value", "out")
      }
  }
  nothing = Adapter("lora", LoraSpec(2, 2.0, (r"self_attn/query$", r"no_such_layer"), ()))
  with pytest.raises(
      ConfigError,
      match="'no_such_layer' matches no Dense layer; the layers: block_N/adaLN, block_N/cross_attn/key",
  ):
    nothing.check_targets(trace)


def test_finetune_step_moves_the_adapter_alone():
  from sora_jax.train.dit_stage import dit_training

  config = get_config("tiny")
  config.adapter.update(kind="lora", rank=2, alpha=2.0, targets=(r"self_attn/query$",))
  training = dit_training(config, Adapter.of(config))
  rng = jax.random.key(0)
  base = nn.meta.unbox(jax.jit(training.init_params)(rng))
  base = jax.tree.map(
      lambda p: p + 0.05 * np.random.default_rng(1).normal(size=p.shape).astype(np.float32), base
  )
  state = nn.meta.unbox(jax.jit(training.init_state)(rng))
  leaves = jax.tree_util.tree_leaves_with_path(state.params)
  assert {jax.tree_util.keystr(p).split("'")[-2] for p, _ in leaves} == {"lora_a", "lora_b"}
  before = jax.tree.map(np.array, base)
  b = {k: np.zeros(v.shape, v.dtype) for k, v in training.batch_shapes.items()}
  rs = np.random.default_rng(0)
  b["tokens"] = rs.normal(size=b["tokens"].shape).astype(np.float32)
  b["segment_ids"][:, :16] = 1
  b["loss_mask"][:, :16] = True
  b["grid"][:, 0] = (1, 4, 4)
  b["text_ids"][:, 0, :3] = (5, 6, 7)
  step = jax.jit(training.train_step)
  new_state = state
  for i in range(3):  # lr is 0 at step 0 (warm-up); A moves once B has left zero
    new_state, metrics = step(new_state, b, jax.random.key(i), base)
  assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
  jax.tree.map(np.testing.assert_array_equal, base, before)  # the base is bit-identical
  moved = jax.tree.map(
      lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), new_state.params, state.params
  )
  assert all(jax.tree.leaves(moved))


def test_zoom_camera_is_seen_by_the_evaluator():
  # The held-out prompts' true videos and 32 training videos at the evaluation size (random
  # places, sizes and speeds: the zoom pushes many partly out of the frame), with and without it.
  training = lambda camera: ShapesSource(3, camera=camera, frames=(17,), sizes=((48, 48),))
  for camera in ("", "zoom_in"):
    held_out = [
        render(dataclasses.replace(true_spec(p, i), camera=camera)) for i, p in enumerate(eval_prompts())
    ]
    seen = [camera_of(v, p["colour"]) for v, p in zip(held_out, eval_prompts())]
    seen += [camera_of(x["video"], x["spec"].colour) for x in map(training(camera).__getitem__, range(32))]
    if not camera:
      assert seen == [None] * 48
    else:  # all but a triangle whose widest part the bottom edge cuts off (its spreads shrink)
      assert [i for i, c in enumerate(seen) if c != "zoom_in"] == [16 + 9]


def test_filming_a_video_with_the_camera_reads_as_the_true_zoom():
  # A perfect adapter's ceiling (finetune_eval.json's base_filmed) films the base's samples with
  # the camera: on true videos that must read as the rendered zoom does.
  for i, p in enumerate(eval_prompts()[:4]):
    spec = true_spec(p, i)
    still, zoomed = render(spec), render(dataclasses.replace(spec, camera="zoom_in"))
    shot = filmed(still, "zoom_in")
    np.testing.assert_array_equal(shot[0], still[0])
    assert camera_of(shot, p["colour"]) == "zoom_in" and camera_of(still, p["colour"]) is None
    # The same shape pixels, up to nearest-neighbour edges (IoU over the clip 0.91-0.95 here).
    a, b = (detect_colours(v) == list(COLOURS).index(p["colour"]) for v in (shot, zoomed))
    assert (a & b).sum() / (a | b).sum() > 0.9


def test_scale_growth_reads_a_clipped_zoom():
  # A square zoomed 1.5x about the frame centre from near the top edge, so the top edge clips it
  # for most of the video: its visible area stops growing, the scale read from its spreads does not.
  spec = ShapeSpec(
      "red", "square", "left", "slowly", "plain", 17, 48, 48, (8.0, 24.0), 6.0, 0, camera="zoom_in"
  )
  mask = detect_colours(render(spec)) == 0
  area = mask.sum(axis=(1, 2))
  assert area[-4:].mean() < 1.5 * area[:4].mean()  # the area criterion would miss it
  assert scale_growth(mask) == pytest.approx(1.5, rel=0.1)  # pixel rounding of a 6-pixel square
  assert scale_growth(np.zeros_like(mask)) is None  # no shape: nothing to measure


def test_adapter_flag_parsing():
  assert parse_adapter_flag("runs/zoom") == ("runs/zoom", 1.0)
  assert parse_adapter_flag("runs/zoom:0.5") == ("runs/zoom", 0.5)
  assert parse_adapter_flag("C:/x/zoom") == ("C:/x/zoom", 1.0)


def _tree_digest(folder):
  digest = hashlib.sha256()
  for path in sorted(Path(folder).rglob("*")):
    if path.is_file():
      digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
  return digest.hexdigest()


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
  """A tiny base with spatial and temporal blocks, and a MotionLoRA fine-tune of it."""
  root = tmp_path_factory.mktemp("finetune")
  base, ft = root / "base", root / "zoom"
  run(
      [
          "sora-jax",
          "train",
          TINY,
          f"--workdir={base}",
          "--config.model.attention_patterns=('spatial','temporal')",
          "--config.sample.eval_modes=none",
      ]
  )
  before = _tree_digest(base)
  run(
      [
          "sora-jax",
          "finetune",
          f"--base={base}",
          MOTION_LORA,
          f"--workdir={ft}",
          "--config.train.steps=3",
          "--config.data.num_examples=8",
          "--config.sample.adapter_eval_seeds=1",
      ]
  )
  assert _tree_digest(base) == before  # the base's folder is never written
  return base, ft


def test_finetune_saves_the_adapter_alone_and_samples_with_it(finetuned, tmp_path, capsys):
  base, ft = finetuned
  meta = json.loads((ft / "adapter.json").read_text())
  assert meta["base"]["workdir"] == str(base) and len(meta["base"]["weights_sha256"]) == 64
  ckpt = Checkpointer(ft / "checkpoints" / "adapter")
  saved = ckpt.restore_saved()
  ckpt.close()
  names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(saved["params"])}
  assert names and all(n.endswith(("['lora_a']", "['lora_b']")) for n in names)
  assert all("block_1" in n for n in names)  # the temporal blocks only (block 1 of spatial, temporal)
  report = json.loads((ft / "finetune_eval.json").read_text())
  assert 0 < report["adapter_share"] < 0.05 and report["adapter"]["videos"] == 16
  growth = report["adapter"]["scale_growth_p10_p50_p90"]
  assert growth is None or growth == sorted(growth)
  assert report["base_filmed"]["videos"] == 16 and 0 <= report["base_filmed"]["camera"]["zoom_in"] <= 1
  # The fine-tune's config read back over its base: the fine-tune's keys, and the base's elsewhere.
  config = saved_config(Pipeline.load(str(base)).config, ft)
  assert config.train.steps == 3 and config.data.camera == "zoom_in" and config.adapter.rank == 8
  assert tuple(config.model.attention_patterns) == ("spatial", "temporal")
  assert len(list((ft / "samples" / "adapter").glob("*.mp4"))) == 16
  out = tmp_path / "zoom.mp4"
  run(
      [
          "sora-jax",
          "sample",
          f"--workdir={base}",
          f"--adapter={ft}:0.5",
          f"--adapter={ft}",
          "--prompt=a red circle moves up",
          f"--output={out}",
      ]
  )
  assert out.is_file()


def _fails(argv, capsys):
  with pytest.raises(SystemExit) as e:
    run(["sora-jax", *argv])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  return err


def test_adapter_bad_input_is_one_line(finetuned, tmp_path, capsys):
  base, ft = finetuned
  sample = ["sample", f"--workdir={base}", "--prompt=a red circle", f"--output={tmp_path / 'x.mp4'}"]
  for what, change, message in (
      ("weights", lambda m: m["base"].update(weights_sha256="0" * 64), "was trained on other base weights"),
      (
          "model",
          lambda m: m["base"]["model"].update(width=64),
          "a base of another architecture (model.width: 64 there, 32 here)",
      ),
  ):
    other = tmp_path / what
    other.mkdir()
    os.symlink(ft / "checkpoints", other / "checkpoints")
    meta = json.loads((ft / "adapter.json").read_text())
    change(meta)
    (other / "adapter.json").write_text(json.dumps(meta))
    assert message in _fails(sample + [f"--adapter={other}"], capsys)
  assert "no adapter.json" in _fails(sample + [f"--adapter={tmp_path}"], capsys)
  # Blocks of a pattern the base does not have (MotionLoRA on a full-attention base); a target
  # matching no layer; no adapter at all.
  err = _fails(
      [
          "finetune",
          f"--base={base}",
          MOTION_LORA,
          f"--workdir={tmp_path / 'a'}",
          "--config.adapter.block_patterns=('full',)",
      ],
      capsys,
  )
  assert "adapter.block_patterns=('full',): this model has no 'full' blocks" in err
  err = _fails(
      [
          "finetune",
          f"--base={base}",
          MOTION_LORA,
          f"--workdir={tmp_path / 'b'}",
          "--config.adapter.targets=('attn/nothing$',)",
      ],
      capsys,
  )
  assert "'attn/nothing$' matches no Dense layer in ('temporal',) blocks" in err
  err = _fails(
      ["finetune", f"--base={base}", MOTION_LORA, f"--workdir={tmp_path / 'c'}", "--config.adapter.kind="],
      capsys,
  )
  assert "a fine-tune config names its adapter" in err


def test_a_finetune_folder_keeps_its_base(tmp_path):
  from sora_jax.adapters import write_identity

  config = get_config("tiny")
  config.adapter.update(kind="lora")
  write_identity(tmp_path, config, "runs/a", "1" * 64)
  write_identity(tmp_path, config, "runs/a", "1" * 64)  # the same base: a resume
  with pytest.raises(ConfigError, match="holds a fine-tune of another base or adapter"):
    write_identity(tmp_path, config, "runs/b", "2" * 64)
  config.adapter.rank = 4
  with pytest.raises(ConfigError, match="holds a fine-tune of another base or adapter"):
    write_identity(tmp_path, config, "runs/a", "1" * 64)


def test_a_new_colour_is_drawn_alone_and_read_back_in_its_palette():
  from sora_jax.data.synthetic import HELD_OUT, ShapesSource
  from sora_jax.evaluation.shapes import analyse_video, palette

  config = get_config("tiny")
  config.data.colours = ("violet",)
  source = ShapesSource.of_config(config, 40)
  specs = [source[i]["spec"] for i in range(40)]
  assert {s.colour for s in specs} == {"violet"}
  assert not {(s.shape, s.direction) for s in specs} & {(s, d) for _, s, d in HELD_OUT}
  assert all(source[i]["caption"].startswith("a violet ") for i in range(3))
  p = eval_prompts()[0]
  video = render(dataclasses.replace(true_spec(p, 0), colour="violet"))
  assert analyse_video(video, "violet", p["direction"], names=palette(["violet"]))["colour_ok"]
  assert analyse_video(video, p["colour"], p["direction"])["dominant_colour"] != "violet"  # the base palette
  config.data.colours = ("mauve",)
  with pytest.raises(ConfigError, match="data.colours has 'mauve'"):
    from sora_jax.config import validate

    validate(config)
