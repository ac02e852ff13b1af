"""Scaling studies: the model family, muP (roles, base-width equality, the coordinate check) and
U-ViT long skips."""
import json
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.shapes import get_config
from sora_jax.bench import packed_bench_batch
from sora_jax.cli import run
from sora_jax.config import ConfigError, validate
from sora_jax.scaling.family import SIZES, family_report, member, parameter_count
from sora_jax.scaling.mup import param_roles
from sora_jax.train.dit_stage import dit_training

TINY = f"--config={Path(__file__).resolve().parents[1] / 'configs' / 'shapes.py'}:tiny"


def _state_and_batch(config):
  training = dit_training(config)
  state = nn.meta.unbox(jax.jit(training.init_state)(jax.random.key(0)))
  return training, state, packed_bench_batch(config)


def test_family_spans_100x_parameters_and_counts_exactly():
  report = family_report(get_config())
  rows = report["sizes"]
  params = [r["parameters"] for r in rows]
  assert len(rows) >= 6 and params == sorted(params) and params[-1] / params[0] >= 100
  assert all(r["width"] == 64 * r["depth"] and r["heads"] == r["depth"] for r in rows)
  assert all(r["train_flops_per_token_with_padding"] >= r["train_flops_per_token"] > 0 for r in rows)
  assert 0 <= report["padding_fraction"] < 0.5
  # The count from shapes equals the initialised model's.
  small = member(get_config(), SIZES[0])
  _, state, _ = _state_and_batch(small)
  assert parameter_count(small)[0] == sum(x.size for x in jax.tree.leaves(state.params)) == params[0]


def test_family_command_prints_every_size(capsys):
  run(["sora-jax", "family", TINY])
  out = capsys.readouterr().out
  assert len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) == len(SIZES)


def test_mup_roles_follow_width():
  roles = {k: r for k, (r, _) in param_roles(get_config("tiny")).items()}
  assert roles["patch_embed/kernel"] == "input"
  assert roles["final/kernel"] == "output"
  assert roles["block_0/adaLN/kernel"] == "hidden"  # adaLN counts as hidden (muP for DiTs)
  assert roles["block_0/mlp/fc1/kernel"] == "hidden"
  assert roles["block_0/self_attn/query/bias"] == "vector"
  assert all(r == "fixed" for k, r in roles.items() if k.startswith("text_encoder/") and k.endswith("embedding"))


def test_mup_at_its_base_equals_standard():
  """At base width and head size, muP is the standard model: same init, same first updates."""
  c = get_config("tiny")
  c.train.warmup, c.train.schedule = 1, "constant"
  m = c.copy_and_resolve_references()
  m.model.parametrization = "mup"
  m.model.mup_base_width, m.model.mup_base_head_dim = c.model.width, c.model.width // c.model.num_heads
  validate(m)
  outs = []
  for config in (c, m):
    training, state, batch = _state_and_batch(config)
    for i in range(3):
      state, metrics = jax.jit(training.train_step)(state, batch, jax.random.key(i))
    outs.append((state.params, float(metrics["loss"])))
  assert outs[0][1] == outs[1][1]
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), outs[0][0], outs[1][0])


def test_coord_check_flat_under_mup_not_under_standard(tmp_path):
  """The issue's test: under muP the log-log slope of every layer's activation size against
  width (8x span) stays within 0.1 after the first updates; under standard it does not."""
  run(["sora-jax", "coord-check", TINY, "--widths=32,64,256", "--check_steps=4", f"--output={tmp_path}"])
  report = json.loads((tmp_path / "coord_check.json").read_text())
  assert report["mup"]["max_abs_slope"] <= 0.1 and report["mup"]["width_independent"]
  assert report["standard"]["max_abs_slope"] > 0.1 and not report["standard"]["width_independent"]
  assert {"block_0", "block_1", "final", "patch_embed"} <= set(report["mup"]["slopes"])
  assert (tmp_path / "coord_check.png").stat().st_size > 1000 and (tmp_path / "coord_check.txt").exists()


def test_coord_check_refuses_a_narrow_width_span(tmp_path, capsys):
  with pytest.raises(SystemExit):
    run(["sora-jax", "coord-check", TINY, "--widths=32", f"--output={tmp_path}"])
  assert "at least two widths" in capsys.readouterr().err
  assert not any(tmp_path.iterdir())


def test_long_skips_start_as_the_model_without_them():
  c = get_config("tiny")
  c.model.depth = 4
  s = c.copy_and_resolve_references()
  s.model.long_skips = True
  validate(s)
  outputs = []
  for config in (c, s):
    training, state, batch = _state_and_batch(config)
    t = jax.numpy.full(batch["grid"].shape[:2], 0.5)
    # Non-zero outputs: perturb the zero-initialised readout and gates the same way in both.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.01 if "skip_" not in jax.tree_util.keystr(p) else x, state.params)
    keys = set(jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])
    out = training.model.apply({"params": params}, batch["tokens"], batch["segment_ids"], batch["positions"],
                               batch["cond_mask"], t, batch["text_ids"])
    outputs.append((out, keys))
  assert any("skip_2" in k for k in outputs[1][1]) and not any("skip_" in k for k in outputs[0][1])
  np.testing.assert_allclose(np.asarray(outputs[0][0]), np.asarray(outputs[1][0]), rtol=1e-5, atol=1e-6)
  odd = s.copy_and_resolve_references()
  odd.model.depth = 3
  with pytest.raises(ConfigError, match="long_skips"):
    validate(odd)
