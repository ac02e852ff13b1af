"""`aot` compiles the train and sampling steps for a TPU pod on this CPU machine (needs libtpu)."""
import pytest

from configs.shapes import get_config
from sora_jax import aot
from sora_jax.config import ConfigError

pytest.importorskip("libtpu", reason="install the tpu extra: pip install -e .[tpu]")


def test_compiles_for_a_v5p_slice_and_reports_memory_and_flops():
  report = aot.compile_report(get_config("tiny"), "v5p-8")
  assert report["topology"] == "v5p:2x2x1" and report["chips"] == 4
  assert report["mesh"]["data"] == 4 and report["parameters"] > 10_000
  for step in report["reports"]:
    assert step["fits"] and 0 < step["memory_per_chip_gib"] < step["hbm_per_chip_gib"] == 95.0
    assert step["xla_flops_per_chip"] > 0 and step["model_flops_per_chip"] > 0
    assert 0 < step["roofline_mfu"] <= 1.0
  train, sample = report["reports"]
  assert train["xla_flops_per_chip"] > 2 * sample["xla_flops_per_chip"]  # backward costs more
  # Data parallel over 4 chips: the gradients cross ICI (about one f32 copy of the params).
  moved = train["collective_bytes_per_chip"]
  assert moved["all-reduce"] + moved["reduce-scatter"] >= 0.9 * 4 * report["parameters"]
  assert train["ici_seconds"] > 0 and train["roofline_with_ici_step_seconds"] >= train["roofline_step_seconds"]


def test_collective_bytes_are_read_from_the_compiled_program():
  hlo = """
  %all-gather-start.1 = (bf16[4,8]{1,0}, bf16[16,8]{1,0}) all-gather-start(bf16[4,8]{1,0} %p), dimensions={0}
  %all-gather-done.1 = bf16[16,8]{1,0} all-gather-done((bf16[4,8]{1,0}, bf16[16,8]{1,0}) %all-gather-start.1)
  %all-reduce.2 = f32[100]{0} all-reduce(f32[100]{0} %g), to_apply=%add
  %reduce-scatter.3 = f32[25]{0} reduce-scatter(f32[100]{0} %g), dimensions={0}
  %fusion.4 = f32[100]{0} fusion(f32[100]{0} %g), kind=kLoop
  """
  moved = aot.collective_bytes(hlo)
  assert moved["all-gather"] == 2 * (4 * 8 + 16 * 8)  # the async start's tuple, counted once
  assert moved["all-reduce"] == 400 and moved["reduce-scatter"] == 100 and moved["all-to-all"] == 0


def test_splash_with_segment_block_masks_compiles_for_tpu():
  """The Pallas kernel with block masks computed from the data lowers through Mosaic for TPU."""
  config = get_config("tiny")
  config.model.attention_impl = "splash"
  report = aot.compile_report(config, "v5p-8")
  assert all(step["fits"] and step["kernel_flops_per_chip"] > 0 for step in report["reports"])


@pytest.mark.parametrize("topology, shape", [("v5p-256", "v5p:4x4x8"), ("v6e-256", "v6e:16x16"),
                                             ("v5p-16", "v5p:2x2x2"), ("v6e:4x8", "v6e:4x8")])
def test_topology_names(topology, shape):
  assert aot.parse_topology(topology)[2] == shape


def test_bad_topology_is_one_clear_error():
  with pytest.raises(ConfigError, match="expected e.g. v5p-256"):
    aot.parse_topology("tpu-9000")


def test_multislice_mesh_puts_slices_on_data():
  config = get_config("tiny")
  config.mesh.dcn.data = 2
  report = aot.compile_report(config, "v5p-8", num_slices=2)
  assert report["chips"] == 8 and report["slices"] == 2 and report["mesh"]["data"] == 8
  assert all(step["fits"] for step in report["reports"])


def test_a_frozen_text_encoder_compiles_sharded_for_the_pod():
  """With model.text.kind=t5 the report adds the encoder's call on a batch's captions, its
  weights split over fsdp (compiled from config.json alone: no weights are read)."""
  from pathlib import Path
  config = get_config("tiny")
  config.model.text.kind = "t5"
  config.model.text.path = str(Path(__file__).parent / "data" / "t5" / "t5_tiny")
  config.mesh.fsdp, config.mesh.data = 2, -1
  report = aot.compile_report(config, "v5p-8")
  names = [step["step"] for step in report["reports"]]
  assert names == ["train_step", "sample_step", "text_encode"], names
  encode = report["reports"][2]
  assert encode["fits"] and encode["model_flops_per_chip"] > 0 and encode["xla_flops_per_chip"] > 0
