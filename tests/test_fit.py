"""Scaling-law fits recover known laws from synthetic points, and their bands cover the truth."""
import numpy as np
import pytest

from sora_jax.scaling.fit import _bootstrap, fit_law, frontier, law_c, law_nd, optimal_sizes, _starts_c, _starts_nd

TRUE_ND = dict(E=0.5, A=20.0, alpha=0.3, B=50.0, beta=0.25)


def _cells_nd(rng, noise=0.005):
  cells = []
  for n in np.geomspace(1e5, 1e8, 6):
    for d in np.geomspace(1e7, 1e10, 5):
      t = TRUE_ND
      loss = t["E"] + t["A"] * n ** -t["alpha"] + t["B"] * d ** -t["beta"]
      cells.append({"N": n, "D": d, "C": 6 * n * d, "loss": loss * np.exp(noise * rng.normal())})
  return cells


def test_l_of_n_d_recovers_its_exponents_and_the_band_covers_them():
  rng = np.random.default_rng(0)
  cells = _cells_nd(rng)
  fit = lambda cs: fit_law(law_nd, np.array([[c["N"] for c in cs], [c["D"] for c in cs]]),
                           np.array([c["loss"] for c in cs]), _starts_nd(np.array([c["loss"] for c in cs])))
  p = fit(cells)
  assert p[2] == pytest.approx(TRUE_ND["alpha"], abs=0.05) and p[4] == pytest.approx(TRUE_ND["beta"], abs=0.05)
  assert np.exp(p[0]) == pytest.approx(TRUE_ND["E"], rel=0.1)
  boots = _bootstrap(cells, fit, np.random.default_rng(1), count=60)
  alphas = boots[:, 2]
  low, high = np.percentile(alphas, (5, 95))
  assert len(boots) > 50 and low <= TRUE_ND["alpha"] <= high


def test_l_of_c_recovers_its_exponent():
  rng = np.random.default_rng(2)
  c = np.geomspace(1e12, 1e16, 10)
  loss = (0.4 + 300.0 * c ** -0.2) * np.exp(0.003 * rng.normal(size=c.shape))
  p = fit_law(law_c, c, loss, _starts_c(loss))
  assert p[2] == pytest.approx(0.2, abs=0.03) and np.exp(p[0]) == pytest.approx(0.4, rel=0.1)


def test_frontier_and_iso_flop_minima():
  cells = [{"C": c, "loss": l, "N": n, "budget": b} for c, l, n, b in [
      (1, 3.0, 1, 1), (1, 2.5, 2, 1), (1, 2.8, 4, 1), (4, 2.6, 1, 4), (4, 2.5, 2, 4), (4, 1.9, 4, 4)]]
  assert [c["loss"] for c in frontier(cells)] == [2.5, 1.9]  # the best per compute, then only improvements
  minima = optimal_sizes(cells)
  assert 1 < minima[1] < 4 and minima[4] == 4  # budget 4's parabola opens down: its best size


def test_lr_transfer_reads_the_best_learning_rate_per_width():
  from sora_jax.scaling.fit import lr_transfer

  cells = [{"parametrization": p, "width": w, "lr": lr, "loss": loss} for p, w, lr, loss in [
      ("standard", 64, 1e-3, 1.0), ("standard", 64, 2e-3, 0.9), ("standard", 512, 1e-3, 0.8),
      ("standard", 512, 2e-3, 1.1), ("mup", 64, 1e-3, 1.0), ("mup", 64, 2e-3, 0.9), ("mup", 512, 1e-3, 0.9),
      ("mup", 512, 2e-3, 0.7)]]
  out = lr_transfer(cells)
  assert out["standard"]["shift_2x_steps"] == -1.0 and out["mup"]["shift_2x_steps"] == 0.0
  assert out["mup"]["best_lr"] == {"64": 2e-3, "512": 2e-3}
