"""`sora-jax fit --sweep=DIR`: scaling laws from a sweep's cells, with bootstrap bands.

- L(C) = E + A C^-alpha on the compute frontier (the cells no cheaper cell beats);
- L(N, D) = E + A N^-alpha + B D^-beta over every cell (the Chinchilla form Yin et al. use for
  video DiTs), N the DiT's non-embedding parameters, D the training tokens;
- N_opt(C): per budget, the minimum of a parabola in log N through that budget's cells, then a
  power law N_opt = k C^a through those minima.
Fits minimise a Huber loss of log-space residuals from several starts (as Chinchilla);
90 % bands come from refitting bootstrap resamples of the cells; the extrapolation check fits
without the largest budget and reports the error predicting its cells. Diverged, failed and
unfinished cells are listed and left out. Writes DIR/report/{fit.json, cells.csv, *.png}.
"""

import csv
import glob
import json
import os

import ml_collections
import numpy as np
from scipy.optimize import minimize

from sora_jax.config import ConfigError
from sora_jax.files import atomic_path, write_json
from sora_jax.scaling.family import data_mix_grids, mix_padding, parameter_count, size_row

HUBER_DELTA = 1e-3
BOOTSTRAPS = 200
BAND = (5.0, 95.0)


def read_cells_status(sweep_dir):
  """Every cell's status.json (with its folder's hash), by path."""
  out = []
  for path in sorted(glob.glob(os.path.join(sweep_dir, "cells", "*", "status.json"))):
    with open(path) as f:
      out.append(json.load(f) | {"hash": os.path.basename(os.path.dirname(path))})
  return out


def read_cells(sweep_dir):
  """(done cells with N, D, C, loss, scores; the names of the others with their status)."""
  done, others = [], []
  for status in read_cells_status(sweep_dir):
    path = os.path.join(sweep_dir, "cells", status["hash"], "status.json")
    if status["status"] != "done":
      others.append(f"{status['name']} ({status['status']})")
      continue
    with open(os.path.join(os.path.dirname(path), "config.json")) as f:
      config = ml_collections.ConfigDict(json.load(f))
    grids = data_mix_grids(config)
    per_token = size_row(config, grids, mix_padding(config, grids))["train_flops_per_token"]
    done.append(
        {
            "name": status["name"],
            "depth": status["depth"],
            "lr": config.train.lr,
            "parametrization": config.model.get("parametrization", "standard"),
            "width": config.model.width,
            "budget": status["budget"],
            "C": status["flops"],
            "N": float(parameter_count(config)[1]),
            "D": status["flops"] / per_token,
            "loss": status["validation_loss"],
            "loss_se": status["validation_standard_error"],
            "direction": (status.get("scores") or {}).get("direction_accuracy"),
            "per_time": _per_time(os.path.dirname(path), config.train.steps),
        }
    )
  return done, others


def _per_time(folder, steps):
  path = os.path.join(folder, "validation", f"step_{steps}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    report = json.load(f)
  return {"times": report["times"], "loss": report["per_time"]}


def _huber(r, delta=HUBER_DELTA):
  a = np.abs(r)
  return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def fit_law(predict, x, loss, starts):
  """Parameters minimising the Huber loss of log(predict(params, x)) - log(loss), best of the
  starts (a list of parameter vectors)."""
  target = np.log(loss)

  def objective(p):
    with np.errstate(all="ignore"):  # starts far off overflow; they score 1e9 and lose
      pred = predict(p, x)
    if not np.all(np.isfinite(pred)) or np.any(pred <= 0):
      return 1e9
    return float(_huber(np.log(pred) - target).sum())

  best = min(
      (minimize(objective, np.asarray(s, float), method="L-BFGS-B") for s in starts), key=lambda r: r.fun
  )
  return best.x


# Parameters are log-scaled where they must be positive: E = exp(e), A = exp(a).
def law_c(p, c):
  e, a, alpha = p
  return np.exp(e) + np.exp(a) * np.power(c, -alpha)


def law_nd(p, nd):
  e, a, alpha, b, beta = p
  n, d = nd
  return np.exp(e) + np.exp(a) * np.power(n, -alpha) + np.exp(b) * np.power(d, -beta)


def _starts_c(loss):
  floor = np.log(max(loss.min() * 0.5, 1e-6))
  return [(floor, a, alpha) for a in (0.0, 5.0, 10.0) for alpha in (0.05, 0.2, 0.5)]


def _starts_nd(loss):
  floor = np.log(max(loss.min() * 0.5, 1e-6))
  return [(floor, a, al, a, al) for a in (0.0, 5.0) for al in (0.1, 0.3, 0.6)]


def frontier(cells):
  """The best cell of each budget (cells of one budget differ in compute by up to 1 %: they
  count as one point), then those no cell of less compute beats, by compute."""
  best = {}
  for cell in cells:
    key = cell.get("budget") or cell["C"]
    if key not in best or cell["loss"] < best[key]["loss"]:
      best[key] = cell
  out, lowest = [], np.inf
  for cell in sorted(best.values(), key=lambda c: c["C"]):
    if cell["loss"] < lowest:
      out.append(cell)
      lowest = cell["loss"]
  return out


def optimal_sizes(cells):
  """{budget: N_opt} from a parabola in log N through each budget's cells (3 or more sizes)."""
  out = {}
  for budget in sorted({c["budget"] for c in cells if c["budget"]}):
    group = [c for c in cells if c["budget"] == budget]
    if len({c["N"] for c in group}) < 3:
      continue
    x, y = np.log([c["N"] for c in group]), np.array([c["loss"] for c in group])
    a, b, _ = np.polyfit(x, y, 2)
    # A parabola opening down has no minimum: the budget's best size is at the sweep's edge.
    out[budget] = float(np.exp(-b / (2 * a))) if a > 0 else float(np.exp(x[np.argmin(y)]))
  return out


def _bootstrap(cells, fit_fn, rng, count=BOOTSTRAPS):
  fits = []
  for _ in range(count):
    sample = [cells[i] for i in rng.integers(len(cells), size=len(cells))]
    try:
      fits.append(fit_fn(sample))
    except (ConfigError, ValueError, np.linalg.LinAlgError):
      continue
  return np.array(fits)


def _need(cells, count, what):
  if len(cells) < count:
    raise ConfigError(
        f"{what}: {len(cells)} cells for {count} parameters; the sweep needs more finished cells"
    )


def lr_transfer(cells):
  """{parametrization: {"best_lr": {width: lr}, "shift_2x_steps": log2 of the best lr's move from
  the narrowest to the widest width}} where a width was trained at several learning rates."""
  out = {}
  for p in sorted({c["parametrization"] for c in cells}):
    best = {}
    for width in sorted({c["width"] for c in cells if c["parametrization"] == p}):
      group = [c for c in cells if c["parametrization"] == p and c["width"] == width]
      if len({c["lr"] for c in group}) > 1:
        best[width] = min(group, key=lambda c: c["loss"])["lr"]
    if len(best) > 1:
      widths = sorted(best)
      out[p] = {
          "best_lr": {str(w): best[w] for w in widths},
          "shift_2x_steps": float(np.log2(best[widths[-1]] / best[widths[0]])),
      }
  return out


def fit_sweep(sweep_dir, seed=0):
  """The report (and DIR/report/ files)."""
  cells, left_out = read_cells(sweep_dir)
  transfer = lr_transfer(cells)
  if transfer and not any(c["budget"] for c in cells):  # an lr study: no compute laws to fit
    return _write_report(
        sweep_dir, cells, {"cells": len(cells), "left_out": left_out, "lr_transfer": transfer}
    )
  front = frontier(cells)
  _need(front, 3, "L(C) on the compute frontier")
  _need(cells, 5, "L(N, D)")
  rng = np.random.default_rng(seed)
  fit_c = lambda cs: fit_law(
      law_c,
      np.array([c["C"] for c in cs]),
      np.array([c["loss"] for c in cs]),
      _starts_c(np.array([c["loss"] for c in cs])),
  )
  fit_nd = lambda cs: fit_law(
      law_nd,
      np.array([[c["N"] for c in cs], [c["D"] for c in cs]]),
      np.array([c["loss"] for c in cs]),
      _starts_nd(np.array([c["loss"] for c in cs])),
  )
  p_c, p_nd = fit_c(front), fit_nd(cells)
  boot_c = _bootstrap(front, fit_c, rng)
  boot_nd = _bootstrap(cells, fit_nd, rng)
  c_grid = np.geomspace(min(c["C"] for c in cells), max(c["C"] for c in cells) * 4, 50)
  band = np.percentile([law_c(p, c_grid) for p in boot_c], BAND, axis=0)
  report = {
      "cells": len(cells),
      "left_out": left_out,
      "L_of_C": _law_report(("E", "A", "alpha"), p_c, boot_c, log_params=(0, 1)),
      "L_of_N_D": _law_report(("E", "A", "alpha", "B", "beta"), p_nd, boot_nd, log_params=(0, 1, 3)),
      "frontier": [c["name"] for c in front],
      "curve": {
          "C": c_grid.tolist(),
          "L": law_c(p_c, c_grid).tolist(),
          "band_low": band[0].tolist(),
          "band_high": band[1].tolist(),
      },
      "extrapolation": extrapolation(cells, fit_nd),
      "N_opt": _n_opt(cells),
      "score_vs_loss": [(c["loss"], c["direction"]) for c in cells if c["direction"] is not None],
      "lr_transfer": transfer,
  }
  return _write_report(sweep_dir, cells, report)


def _write_report(sweep_dir, cells, report):
  out = os.path.join(sweep_dir, "report")
  write_json(os.path.join(out, "fit.json"), report)
  _write_csv(os.path.join(out, "cells.csv"), cells)
  from sora_jax.scaling.plots import plot_report  # matplotlib: only here

  plot_report(out, cells, report)
  return report


def _law_report(names, params, boots, log_params):
  value = lambda p, i: float(np.exp(p[i]) if i in log_params else p[i])
  out = {}
  for i, name in enumerate(names):
    samples = [value(b, i) for b in boots] if len(boots) else [value(params, i)]
    low, high = np.percentile(samples, BAND)
    out[name] = {"value": value(params, i), "band_90": [float(low), float(high)]}
  out["bootstrap_fits"] = len(boots)
  return out


def extrapolation(cells, fit_nd):
  """Fit L(N, D) without the largest budget's cells, predict them: % error each."""
  largest = max(c["C"] for c in cells)
  top = max((c["budget"] or c["C"]) for c in cells)
  held = [c for c in cells if (c["budget"] or c["C"]) == top]
  rest = [c for c in cells if (c["budget"] or c["C"]) != top]
  if len(rest) < 5:
    return {"skipped": f"{len(rest)} cells below the largest budget; L(N, D) needs 5"}
  p = fit_nd(rest)
  errors = [100 * (law_nd(p, np.array([[c["N"]], [c["D"]]]))[0] - c["loss"]) / c["loss"] for c in held]
  return {
      "held_out": [c["name"] for c in held],
      "largest_compute": largest,
      "percent_errors": [float(e) for e in errors],
      "mean_abs_percent_error": float(np.mean(np.abs(errors))),
  }


def _n_opt(cells):
  minima = optimal_sizes(cells)
  if len(minima) < 2:
    return {"minima": minima, "skipped": "needs 2 budgets with 3 or more sizes each"}
  budgets = np.array(sorted(minima))
  slope, intercept = np.polyfit(np.log(budgets), np.log([minima[b] for b in budgets]), 1)
  return {
      "minima": {f"{b:.3g}": minima[b] for b in budgets},
      "exponent": float(slope),
      "coefficient": float(np.exp(intercept)),
  }


def _write_csv(path, cells):
  keys = (
      "name",
      "depth",
      "width",
      "parametrization",
      "lr",
      "budget",
      "C",
      "N",
      "D",
      "loss",
      "loss_se",
      "direction",
  )
  with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(keys)
    for c in cells:
      writer.writerow([c[k] for k in keys])
