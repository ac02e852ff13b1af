"""The sweep runner: cells keyed by config hash, iso-FLOP budgets, reruns skip done cells, a
kill -9 resumes to the uninterrupted result, and bad sweeps are refused before any cell starts."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sora_jax.cli import run
from sora_jax.config import ConfigError
from sora_jax.scaling.sweep import FLOP_TOLERANCE, cells, load_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEP = str(ROOT / "tests" / "sweep_tiny.py")


def statuses(workdir):
  return {s["name"]: s for s in (json.loads(p.read_text()) for p in Path(workdir).glob("cells/*/status.json"))}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sweep")
  run(["sora-jax", "sweep", f"--config={SWEEP}", f"--workdir={workdir}"])
  return workdir


def test_sweep_runs_every_cell_at_its_budget(done):
  report = statuses(done)
  resolved, left_out = cells(load_sweep(SWEEP))
  assert set(report) == {c["name"] for c in resolved} and len(left_out) == 2
  for cell in resolved:
    s = report[cell["name"]]
    assert s["status"] == "done" and s["validation_loss"] > 0
    assert abs(s["flops"] - s["budget"]) <= FLOP_TOLERANCE * s["budget"]
    assert (Path(done) / "cells" / cell["hash"] / "checkpoints" / "dit" / str(s["steps"])).is_dir()


def test_rerun_skips_done_cells(done):
  before = {p: p.stat().st_mtime_ns for p in Path(done).glob("cells/*/status.json")}
  summary = run_sweep(SWEEP, str(done))
  assert summary["cells"]["done"] == len(before)
  assert {p: p.stat().st_mtime_ns for p in Path(done).glob("cells/*/status.json")} == before


def test_killed_sweep_resumes_to_the_uninterrupted_result(done, tmp_path):
  env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}")
  command = [sys.executable, "-m", "sora_jax.cli", "sweep", f"--config={SWEEP}", f"--workdir={tmp_path}"]
  proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  # Killed once the first cell has a DiT checkpoint and before it finishes.
  deadline = time.time() + 600
  while time.time() < deadline and not list(tmp_path.glob("cells/*/checkpoints/dit/2")):
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert any(s["status"] == "running" for s in statuses(tmp_path).values())
  run_sweep(SWEEP, str(tmp_path))
  resumed, uninterrupted = statuses(tmp_path), statuses(done)
  assert {n: s["validation_loss"] for n, s in resumed.items()} == {
      n: s["validation_loss"] for n, s in uninterrupted.items()
  }


def _sweep_file(tmp_path, **changes):
  text = Path(SWEEP).read_text().replace('"../configs/', f'"{ROOT}/configs/')
  for key, value in changes.items():
    text = text.replace(f"  s.{key} = ", f"  s.{key} = {value}  # ", 1)
  path = tmp_path / "sweep.py"
  path.write_text(text)
  return str(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(grid='(("train.no_such_key", (1, 2)),)'), "'train.no_such_key' is not a key"),
        (dict(grid='(("model.pos_emb", ("rope", "bogus")),)'), "sweep cell d1_C5.59e+08_model.pos_emb=bogus_seed0"),
        (dict(budgets="(1e3,)"), "no size trains"),
    ],
)
def test_bad_sweeps_are_refused_before_any_cell(tmp_path, capsys, changes, message):
  with pytest.raises(SystemExit):
    run(["sora-jax", "sweep", f"--config={_sweep_file(tmp_path, **changes)}", f"--workdir={tmp_path / 'out'}"])
  assert message in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_a_folder_of_another_sweep_is_refused(done, tmp_path):
  with pytest.raises(ConfigError, match="holds a different sweep"):
    run_sweep(_sweep_file(tmp_path, seeds="(1,)"), str(done))


def test_grid_samples_every_model_from_the_same_initial_latents(done, capsys):
  from sora_jax.generate import Pipeline
  from sora_jax.scaling.grid import grid_requests
  from sora_jax.evaluation.shapes import eval_prompts

  run(["sora-jax", "grid", f"--sweep={done}"])
  report = json.loads((Path(done) / "report" / "grid.json").read_text())
  assert len(report["models"]) == 2 and len(report["tiles"]) == 2 * 4 * 2  # models x prompts x seeds
  assert (Path(done) / "report" / "grid.png").stat().st_size > 1000
  assert (Path(done) / "report" / "grid.mp4").stat().st_size > 1000
  pipes = [Pipeline.load(str(p.parent)) for p in sorted(Path(done).glob("cells/*/status.json"))]
  assert pipes[0].config.model.width != pipes[1].config.model.width
  s = pipes[0].config.sample
  requests = grid_requests(eval_prompts(num_frames=s.num_frames, height=s.height, width=s.width)[:2], (0, 1),
                           s.num_frames, s.height, s.width)
  for a, b in zip(*(p.initial_latents(requests, seed=0) for p in pipes)):
    np.testing.assert_array_equal(a, b)


def test_plan_lists_the_cells_and_writes_nothing(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  run(["sora-jax", "sweep", f"--config={SWEEP}", "--plan"])
  planned = json.loads(capsys.readouterr().out)
  assert [c["steps"] for c in planned["cells"]] == [8, 4] and len(planned["left_out"]) == 2
  assert not any(tmp_path.iterdir())
