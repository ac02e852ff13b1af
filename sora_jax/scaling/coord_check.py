"""Coordinate check (Yang et al., Tensor Programs V): does muP keep activations' size independent
of width once training moves the weights?

The config's model is trained for a few steps at several widths (heads grow with width at the
config's head size, the family's rule), every width on the same packed batch and noise, and the
RMS of each layer's output over real tokens is recorded before each update. Under muP the sizes
after the first updates are flat in width; under the standard parametrisation with Adam they grow
(an update moves each hidden weight by about the learning rate, so a layer's output by about
lr x width). The verdict is the log-log slope of size against width at the last step.
"""

import importlib.util
import os

import flax.linen as nn
import jax
import numpy as np

from sora_jax.bench import packed_bench_batch
from sora_jax.config import ConfigError, validate
from sora_jax.files import atomic_path, write_json
from sora_jax.models.build import with_text_embeds
from sora_jax.models.dit import DiTBlock
from sora_jax.train.dit_stage import dit_training

SLOPE_TOL = 0.1  # |log-log slope| under which a layer counts as width-independent


def _layers(module, method_name):
  """Modules whose outputs are recorded: the patch embedding, every block, the readout."""
  return method_name == "__call__" and (
      isinstance(module, DiTBlock) or module.name in ("patch_embed", "final")
  )


def width_config(config, width, parametrization):
  c = config.copy_and_resolve_references()
  head_dim = c.model.width // c.model.num_heads
  c.model.width, c.model.num_heads = width, max(1, width // head_dim)
  c.model.parametrization = parametrization
  c.model.scan_layers = False  # every block its own module, to record it
  # Full learning rate from the first update: a warmup would hide what updates do to width.
  c.train.warmup, c.train.schedule = 1, "constant"
  validate(c)
  return c


def activation_sizes(config, steps):
  """{layer: [RMS over real tokens before update 0, 1, ..., steps - 1]} for one config."""
  training = dit_training(config)
  state = nn.meta.unbox(jax.jit(training.init_state)(jax.random.key(config.seed)))
  batch = with_text_embeds(
      config, {k: jax.numpy.asarray(v) for k, v in packed_bench_batch(config, seed=config.seed).items()}
  )
  real = np.asarray(batch["segment_ids"]) > 0
  t = jax.numpy.full(batch["grid"].shape[:2], 0.5)

  def forward(params):
    _, captured = training.denoise(params, batch, t, capture_intermediates=_layers, mutable=["intermediates"])
    return captured["intermediates"]

  forward, step = jax.jit(forward), jax.jit(training.train_step)
  sizes = {}
  for i in range(steps):
    for path, out in jax.tree_util.tree_flatten_with_path(forward(state.params))[0]:
      name = "/".join(
          str(p.key) for p in path if isinstance(p, jax.tree_util.DictKey) and p.key != "__call__"
      )
      values = np.asarray(out, np.float64)[real]
      sizes.setdefault(name, []).append(float(np.sqrt(np.mean(values**2))))
    state, _ = step(state, batch, jax.random.key(i))  # the same noise at every width
  return sizes


def slope(widths, sizes):
  """Least-squares slope of log(size) against log(width); 0 where a layer is exactly zero."""
  y = np.log(np.maximum(np.asarray(sizes, np.float64), 1e-30))
  return float(np.polyfit(np.log(np.asarray(widths, np.float64)), y, 1)[0])


def coord_check(config, widths, steps=5, parametrizations=("standard", "mup")):
  """{parametrization: {"sizes": {layer: [[size per step] per width]}, "slopes": {layer: slope at
  the last step}, "max_abs_slope": float, "width_independent": bool}}."""
  widths = sorted(int(w) for w in widths)
  if len(widths) < 2 or widths[-1] < 2 * widths[0]:
    raise ConfigError(
        f"--widths={widths}: give at least two widths spanning at least 2x (the check wants 8x)"
    )
  if steps < 2:
    raise ConfigError(f"--steps={steps}: the check needs at least 2 steps (sizes after an update)")
  report = {"widths": widths, "steps": steps}
  for p in parametrizations:
    runs = [activation_sizes(width_config(config, w, p), steps) for w in widths]
    layers = list(runs[0])
    sizes = {name: [run[name] for run in runs] for name in layers}
    slopes = {name: slope(widths, [s[-1] for s in sizes[name]]) for name in layers}
    worst = max(abs(s) for s in slopes.values())
    report[p] = {
        "sizes": sizes,
        "slopes": slopes,
        "max_abs_slope": worst,
        "width_independent": worst <= SLOPE_TOL,
    }
  return report


def table(report):
  """Text table: per parametrization and layer, the size at the last step per width and the slope."""
  widths = report["widths"]
  lines = [
      (
          f"activation RMS at step {report['steps'] - 1} ({report['steps'] - 2} updates at the full learning rate; "
          "the schedule's first step has lr 0); slope of log size vs log width"
      )
  ]
  for p in ("standard", "mup"):
    if p not in report:
      continue
    r = report[p]
    lines.append(
        f"{p}: max |slope| {r['max_abs_slope']:.3f} ({'flat' if r['width_independent'] else 'grows'})"
    )
    lines.append("  " + "layer".ljust(24) + "".join(f"{'w=' + str(w):>10}" for w in widths) + "     slope")
    for name, per_width in r["sizes"].items():
      cells = "".join(f"{s[-1]:10.4g}" for s in per_width)
      lines.append(f"  {name[-24:]:<24}{cells}{r['slopes'][name]:10.3f}")
  return "\n".join(lines)


def plot(report, path):
  """One panel per parametrization and step: each layer's size against width (log-log)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = [p for p in ("standard", "mup") if p in report]
  steps = report["steps"]
  fig, axes = plt.subplots(
      len(names), steps, figsize=(3 * steps, 2.8 * len(names)), sharey="row", squeeze=False
  )
  for row, p in enumerate(names):
    for t in range(steps):
      ax = axes[row][t]
      for name, per_width in report[p]["sizes"].items():
        ax.plot(report["widths"], [s[t] for s in per_width], marker="o", lw=1, label=name)
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_title(f"{p}, step {t}", fontsize=9)
      ax.set_xlabel("width", fontsize=8)
    axes[row][0].set_ylabel("activation RMS", fontsize=8)
  axes[0][-1].legend(fontsize=6, loc="best")
  fig.tight_layout()
  fig.savefig(path, dpi=100, format="png")
  plt.close(fig)


def run_coord_check(config, widths, steps, output):
  """`sora-jax coord-check`: the check written to OUTPUT/coord_check.{json,txt,png}; returns the table."""
  if importlib.util.find_spec("matplotlib") is None:
    raise ConfigError("coord-check draws its plot with matplotlib: pip install -e '.[scaling]'")
  report = coord_check(config, widths, steps)
  text = table(report)
  os.makedirs(output, exist_ok=True)
  write_json(os.path.join(output, "coord_check.json"), report)
  with atomic_path(os.path.join(output, "coord_check.txt")) as tmp, open(tmp, "w") as f:
    f.write(text + "\n")
  with atomic_path(os.path.join(output, "coord_check.png")) as tmp:
    plot(report, tmp)
  return text
