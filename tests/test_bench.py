"""`bench` times the train and sampling steps and reports tokens/s and MFU."""
from configs.shapes import get_config
from sora_jax.bench import run_bench


def test_bench_reports_speed_flops_and_mfu():
  config = get_config("tiny")
  report = run_bench(config, steps=2, warmup=1, peak_flops=1e12)
  assert report["devices"] == 8 and report["mesh"]["data"] == 8
  assert report["train_step_seconds"] > 0 and report["sample_step_seconds"] > 0
  assert report["train_tokens_per_second"] > 0 and report["padding_fraction"] == 0.0
  assert report["train_model_flops"] > 0 and 0 < report["train_mfu"] < 1
  assert report["sample_mfu"] > 0
