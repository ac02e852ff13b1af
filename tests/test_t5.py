"""The T5 v1.1 / UMT5 encoder against transformers + torch: hidden states within 1e-5 in float32
and the same token ids, on tiny random models made by tests/data/t5/make_fixtures.py."""
import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.config import ConfigError
from sora_jax.models.t5 import T5Config, T5Encoder, T5Tokenizer, load_t5_params

FIXTURES = Path(__file__).resolve().parent / "data" / "t5"


@pytest.mark.parametrize("name", ["t5_tiny", "umt5_tiny"])
def test_hidden_states_and_ids_match_transformers(name):
  path = FIXTURES / name
  ref = np.load(path / "reference.npz")
  config = T5Config.from_folder(path)
  assert config.bias_per_layer == (name == "umt5_tiny")
  ids = T5Tokenizer(path)([str(c) for c in ref["captions"]], ref["ids"].shape[1])
  np.testing.assert_array_equal(ids, ref["ids"])
  hidden, mask = T5Encoder(config).apply({"params": load_t5_params(path, config)}, jnp.asarray(ids))
  hidden, mask = np.asarray(hidden), np.asarray(mask)
  np.testing.assert_array_equal(mask, ref["mask"])
  np.testing.assert_allclose(hidden[mask], ref["hidden"][mask], rtol=1e-5, atol=1e-5)
  assert not hidden[~mask].any()  # padded positions zeroed


def test_bfloat16_encoder_stays_close():
  path = FIXTURES / "t5_tiny"
  ref = np.load(path / "reference.npz")
  config = T5Config.from_folder(path)
  params = load_t5_params(path, config, jnp.bfloat16)
  hidden, mask = T5Encoder(config, jnp.bfloat16).apply({"params": params}, jnp.asarray(ref["ids"]))
  err = np.abs(np.asarray(hidden, np.float32) - ref["hidden"])[np.asarray(mask)]
  assert err.mean() < 0.05 * np.abs(ref["hidden"]).mean()


def _copy(tmp_path, name="t5_tiny"):
  folder = tmp_path / name
  shutil.copytree(FIXTURES / name, folder)
  return folder


def test_bad_folders_are_one_line_naming_the_file_or_key(tmp_path):
  from safetensors.numpy import load_file, save_file

  with pytest.raises(ConfigError, match="no config.json"):
    T5Config.from_folder(tmp_path)
  other = _copy(tmp_path)
  raw = json.loads((other / "config.json").read_text())
  (other / "config.json").write_text(json.dumps(raw | {"model_type": "bert"}))
  with pytest.raises(ConfigError, match="model_type='bert' is not a T5 encoder"):
    T5Config.from_folder(other)

  folder = _copy(tmp_path / "b")
  config = T5Config.from_folder(folder)
  weights = load_file(folder / "model.safetensors")
  key = "encoder.block.1.layer.1.DenseReluDense.wi_0.weight"
  save_file({k: v for k, v in weights.items() if k != key}, folder / "model.safetensors")
  with pytest.raises(ConfigError, match=f"no '{key}'"):
    load_t5_params(folder, config)
  save_file(weights | {key: weights[key][:, :-1].copy()}, folder / "model.safetensors")
  with pytest.raises(ConfigError, match=r"model.safetensors: .*wi_0.weight' has shape \(48, 31\)"):
    load_t5_params(folder, config)
  (folder / "spiece.model").unlink()
  with pytest.raises(ConfigError, match="no tokenizer.json or spiece.model"):
    T5Tokenizer(folder)


def test_sharded_weights_load_through_their_index(tmp_path):
  from safetensors.numpy import load_file, save_file

  folder = _copy(tmp_path)
  weights = load_file(folder / "model.safetensors")
  keys = sorted(weights)
  halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
            "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
  for file, part in halves.items():
    save_file({k: weights[k] for k in part}, folder / file)
  (folder / "model.safetensors").unlink()
  index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values())},
           "weight_map": {k: file for file, part in halves.items() for k in part}}
  (folder / "model.safetensors.index.json").write_text(json.dumps(index))
  config = T5Config.from_folder(folder)
  whole = load_t5_params(FIXTURES / "t5_tiny", config)
  sharded = load_t5_params(folder, config)
  assert all(np.array_equal(a, b) for a, b in zip(jax_leaves(whole), jax_leaves(sharded)))


def jax_leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree)]
