"""The scaling report's PNG plots (matplotlib, the `scaling` extra)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sora_jax.files import atomic_path


def _save(fig, path):
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=110, format="png")
  plt.close(fig)


def _by(cells, key):
  groups = {}
  for c in cells:
    groups.setdefault(c[key], []).append(c)
  return dict(sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def plot_lr_transfer(out, cells):
  """Validation loss against learning rate, a line per width, a panel per parametrization."""
  params = sorted({c["parametrization"] for c in cells})
  fig, axes = plt.subplots(1, len(params), figsize=(5 * len(params), 3.8), squeeze=False, sharey=True)
  for ax, p in zip(axes[0], params):
    for width, group in _by([c for c in cells if c["parametrization"] == p], "width").items():
      group = sorted(group, key=lambda c: c["lr"])
      ax.plot([c["lr"] for c in group], [c["loss"] for c in group], marker="o", label=f"width {width}")
    ax.set(xscale="log", xlabel="learning rate", title=p)
    ax.legend(fontsize=7)
  axes[0][0].set_ylabel("validation loss")
  _save(fig, os.path.join(out, "lr_transfer.png"))


def plot_report(out, cells, report):
  """loss_vs_compute, isoflop, per_time_loss, score_vs_loss and (with several learning rates per
  width) lr_transfer, as PNGs in `out`; an lr study (no budgets) has lr_transfer alone."""
  if "L_of_C" not in report:
    plot_lr_transfer(out, cells)
    return
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for depth, group in _by(cells, "depth").items():
    ax.scatter([c["C"] for c in group], [c["loss"] for c in group], label=f"d={depth}", s=22)
  curve = report["curve"]
  law = report["L_of_C"]
  ax.plot(
      curve["C"],
      curve["L"],
      "k-",
      lw=1,
      label=f"E + A C^-{law['alpha']['value']:.3f} (90 %: {law['alpha']['band_90'][0]:.3f}-"
      f"{law['alpha']['band_90'][1]:.3f})",
  )
  ax.fill_between(curve["C"], curve["band_low"], curve["band_high"], color="k", alpha=0.12, lw=0)
  ax.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel="validation loss")
  ax.legend(fontsize=7)
  _save(fig, os.path.join(out, "loss_vs_compute.png"))

  fig, ax = plt.subplots(figsize=(5.5, 4))
  for budget, group in _by(cells, "budget").items():
    group = sorted(group, key=lambda c: c["N"])
    ax.plot([c["N"] for c in group], [c["loss"] for c in group], marker="o", label=f"C={budget:.2g}")
  ax.set(xscale="log", xlabel="non-embedding parameters N", ylabel="validation loss", title="iso-FLOP curves")
  ax.legend(fontsize=7)
  _save(fig, os.path.join(out, "isoflop.png"))

  fig, ax = plt.subplots(figsize=(5.5, 4))
  cmap = plt.get_cmap("viridis")
  span = np.log([min(c["C"] for c in cells), max(c["C"] for c in cells) * 1.0001])
  for c in cells:
    if c["per_time"]:
      shade = (np.log(c["C"]) - span[0]) / (span[1] - span[0])
      ax.plot(c["per_time"]["times"], c["per_time"]["loss"], color=cmap(shade), lw=1, marker=".")
  ax.set(
      xlabel="time t (0 data, 1 noise)",
      ylabel="validation loss at t",
      title="per-time loss (colour: compute)",
  )
  _save(fig, os.path.join(out, "per_time_loss.png"))

  scored = [c for c in cells if c["direction"] is not None]
  if scored:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(
        [c["loss"] for c in scored], [c["direction"] for c in scored], c=np.log([c["C"] for c in scored])
    )
    ax.set(xlabel="validation loss", ylabel="held-out direction accuracy", title="shapes score vs loss")
    _save(fig, os.path.join(out, "score_vs_loss.png"))

  if report.get("lr_transfer"):
    plot_lr_transfer(out, cells)
