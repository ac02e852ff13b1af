"""Compile ahead for a named TPU pod on any machine: does the train step fit, and how fast?

libtpu (the `tpu` extra) compiles for a TPU topology without a TPU. The report gives per-chip
memory against the chip's HBM, XLA's FLOP and byte counts, and a roofline step time and MFU
(the larger of compute time and HBM time; interconnect time is not modelled, and with scanned
layers XLA's byte count covers one loop iteration, so the HBM time is a lower bound).
"""

import dataclasses
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.config import ConfigError
from sora_jax.models.build import frozen_encoder, patch_dim
from sora_jax.parallel.mesh import check_divisibility, make_mesh
from sora_jax.parallel.sharding import (
    MeshFunction,
    abstract_sharded,
    batch_sharding,
    replicated,
    sharded_train_step,
)
from sora_jax.parallel.rules import logical_sharding
from sora_jax.train.dit_stage import dit_training
from sora_jax.train.flops import dit_forward_flop_terms, dit_forward_flops, dit_train_flops

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
  hbm_bytes: float
  peak_flops: float  # dense bf16 FLOP/s
  hbm_bandwidth: float  # bytes/s
  ici_bandwidth: float  # bytes/s per chip, all ICI links together (published Gbps / 8)
  name_counts_cores: bool  # "v5p-256" counts TensorCores (2 per chip); "v6e-256" counts chips
  torus_dims: int
  accelerator_prefix: str


# Public per-chip figures (Cloud TPU documentation).
CHIPS = {
    "v4": Chip(32 * GIB, 275e12, 1.228e12, 2400e9 / 8, True, 3, "v4"),
    "v5e": Chip(16 * GIB, 197e12, 0.819e12, 1600e9 / 8, False, 2, "v5litepod"),
    "v5p": Chip(95 * GIB, 459e12, 2.765e12, 4800e9 / 8, True, 3, "v5p"),
    "v6e": Chip(32 * GIB, 918e12, 1.640e12, 3584e9 / 8, False, 2, "v6e"),
}


def torus_shape(chips, dims):
  """Chip count -> the slice's torus, e.g. 128 chips in 3D -> (4, 4, 8), 256 in 2D -> (16, 16)."""
  if chips < 1 or chips & (chips - 1):
    raise ConfigError(f"--topology: {chips} chips is not a power of two")
  shape = [1] * dims
  for _ in range(int(math.log2(chips))):
    shape[min(range(dims), key=lambda i: (shape[i], -i))] *= 2
  return tuple(sorted(d for d in shape if d > 1)) + (1,) * shape.count(1)  # e.g. 2x2x1


def parse_topology(topology):
  """'v5p-256' (Cloud TPU name) or 'v5p:4x4x8' -> (chip name, Chip, topology name, accelerator type)."""
  m = re.fullmatch(r"(v4|v5e|v5p|v6e)(?:-(\d+)|:(\d+(?:x\d+)+))", topology)
  if not m:
    raise ConfigError(
        f"--topology={topology!r}: expected e.g. v5p-256, v6e-64 or v5p:4x4x8 (chips: {', '.join(CHIPS)})"
    )
  name, count, dims = m.groups()
  chip = CHIPS[name]
  if dims:
    shape = tuple(int(d) for d in dims.split("x"))
    chips = math.prod(shape)
  else:
    count = int(count)
    if chip.name_counts_cores and count % 2:
      raise ConfigError(f"--topology={topology}: {name} slices count TensorCores, 2 per chip")
    chips = count // 2 if chip.name_counts_cores else count
    shape = torus_shape(chips, chip.torus_dims)
  accelerator = f"{chip.accelerator_prefix}-{chips * 2 if chip.name_counts_cores else chips}"
  return name, chip, f"{name}:{'x'.join(map(str, shape))}", accelerator


def tpu_devices(topology, num_slices=1):
  """Abstract TPU devices of a pod (no TPU needed); raises ConfigError if libtpu is missing."""
  _, _, topology_name, accelerator = parse_topology(topology)
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", accelerator)
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # other jax processes may hold libtpu
  from jax.experimental import topologies

  try:
    kwargs = {"num_slices": num_slices} if num_slices > 1 else {}
    return topologies.get_topology_desc(platform="tpu", topology_name=topology_name, **kwargs).devices
  except Exception as e:  # noqa: BLE001 - libtpu reports its failures in several ways
    import importlib.util

    hint = "" if importlib.util.find_spec("libtpu") else "; install the TPU compiler: pip install -e .[tpu]"
    raise ConfigError(f"--topology={topology}: {str(e).splitlines()[0]}{hint}") from None


def _compile(lowered):
  """Compiled executable, or the compiler's out-of-memory message (it refuses what cannot fit)."""
  try:
    return lowered.compile(), None
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    return None, str(e).splitlines()[0]


COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "bf16": 2,
    "f16": 2,
    "s16": 2,
    "u16": 2,
    "f32": 4,
    "s32": 4,
    "u32": 4,
    "f64": 8,
    "s64": 8,
    "u64": 8,
}


def collective_bytes(hlo_text):
  """Bytes each kind of collective produces per chip in a compiled (SPMD-partitioned) program,
  summed over its ops' result shapes (async pairs counted once, at their -start). Ops inside a
  loop body count once per program text, so with scan_layers this is a lower bound."""
  out = dict.fromkeys(COLLECTIVES, 0)
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(", line)
    if not m:
      continue
    for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", m.group(1)):
      if dtype in _DTYPE_BYTES:
        out[m.group(2)] += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
  return out


def _report(name, lowered, chip, chips, model_flops, kernel_flops, recompute):
  """Memory and roofline of one compiled step.

  Compute time uses the larger of two FLOP estimates: XLA's count plus the custom-call kernels
  (splash) that XLA counts as zero, and the analytic model FLOPs times the recompute factor of
  remat. XLA counts a scanned loop body once, so with scan_layers the analytic figure rules.
  """
  compiled, oom = _compile(lowered)
  if oom:
    needed = re.search(r"required for HLO temporaries \(([\d.]+)G\)", oom)
    return {
        "step": name,
        "fits": False,
        "hbm_per_chip_gib": round(chip.hbm_bytes / GIB, 1),
        "temp_needed_gib": float(needed.group(1)) if needed else None,
        "compiler": oom,
    }
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  peak = (
      mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
  )
  flops, bytes_accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
  executed = max(flops + kernel_flops, model_flops / chips * recompute)
  step_time = max(executed / chip.peak_flops, bytes_accessed / chip.hbm_bandwidth)
  collectives = collective_bytes(compiled.as_text())
  ici_time = sum(collectives.values()) / chip.ici_bandwidth
  with_ici = max(step_time, ici_time)
  return {
      "step": name,
      "memory_per_chip_gib": round(peak / GIB, 3),
      "hbm_per_chip_gib": round(chip.hbm_bytes / GIB, 1),
      "fits": bool(peak <= chip.hbm_bytes),
      "memory_breakdown_gib": {
          k: round(getattr(mem, f"{k}_size_in_bytes") / GIB, 3)
          for k in ("argument", "output", "alias", "temp")
      },
      "xla_flops_per_chip": flops,
      "kernel_flops_per_chip": kernel_flops,
      "xla_bytes_per_chip": bytes_accessed,
      "model_flops_per_chip": model_flops / chips,
      "roofline_step_seconds": step_time,
      "roofline_mfu": (model_flops / chips) / (step_time * chip.peak_flops) if step_time else 0.0,
      "collective_bytes_per_chip": collectives,
      "ici_seconds": ici_time,
      # Compute, HBM and ICI as if none overlapped the others' critical path less than fully:
      # the step is at least the slowest of the three.
      "roofline_with_ici_step_seconds": with_ici,
      "roofline_with_ici_mfu": (model_flops / chips) / (with_ici * chip.peak_flops) if with_ici else 0.0,
  }


def compile_report(config, topology, num_slices=1):
  """Compile the DiT train step and one sampling evaluation for the pod; return their reports."""
  chip_name, chip, topology_name, _ = parse_topology(topology)
  devices = tpu_devices(topology, num_slices)
  mesh = make_mesh(config.mesh, devices=devices)
  check_divisibility(config, mesh)
  training = dit_training(config)
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated(mesh))
  state, state_sharding = abstract_sharded(training.init_state, jax.random.key(0), mesh)
  batch_sh = batch_sharding(training.batch_shapes, mesh)
  batch = {
      k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sh[k])
      for k, v in training.batch_shapes.items()
  }

  # Model FLOPs for rows each filled by one example of the configured AOT shape.
  grid = np.asarray(config.aot.example_grid)
  per_row = config.train.row_length // int(grid.prod())
  if per_row < 1:
    raise ConfigError(
        f"aot.example_grid={tuple(grid)} has {int(grid.prod())} tokens, more than "
        f"train.row_length={config.train.row_length}"
    )
  grids = np.tile(grid, (config.train.rows * per_row, 1))
  pd, lt = patch_dim(config), config.model.text.max_len
  _, attention = dit_forward_flop_terms(config.model, pd, lt, grids)
  chips = len(devices)
  # XLA sees inside the xla attention, not inside splash: add the kernels' share by hand
  # (training: forward, backward at twice the forward, and the forward again under remat).
  kernel = attention / chips if config.model.attention_impl in ("splash", "auto") else 0.0
  train_kernel = kernel * (3 + (config.model.remat != "none"))
  step = sharded_train_step(training.train_step, mesh, state_sharding, batch_sh)
  train = step.lower(state, batch, rng)

  t = jax.ShapeDtypeStruct(
      training.batch_shapes["grid"].shape[:2],
      jnp.float32,
      sharding=logical_sharding(jax.sharding.PartitionSpec("batch"), mesh),
  )
  sample = MeshFunction(training.denoise, mesh).lower(state.ema_params, batch, t)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  extra = _text_encoder_report(config, mesh, chip, chips)
  return {
      "topology": topology_name,
      "slices": num_slices,
      "chips": chips,
      "chip": chip_name,
      "mesh": dict(zip(mesh.axis_names, map(int, mesh.devices.shape))),
      "parameters": n_params,
      "tokens_per_step": config.train.rows * config.train.row_length,
      "reports": [
          _report(
              "train_step",
              train,
              chip,
              chips,
              dit_train_flops(config.model, pd, lt, grids),
              train_kernel,
              recompute=4 / 3 if config.model.remat != "none" else 1.0,
          ),
          _report(
              "sample_step",
              sample,
              chip,
              chips,
              dit_forward_flops(config.model, pd, lt, grids),
              kernel,
              recompute=1.0,
          ),
          *extra,
      ],
  }


def _text_encoder_report(config, mesh, chip, chips):
  """A frozen encoder's call on one batch's captions, compiled for the pod ([] for the hashed
  encoder, which is part of the DiT). Its weights stay on the chips beside the train step's
  memory unless the captions are cached (`cache-latents`)."""
  frozen = frozen_encoder(config)
  if frozen is None:
    return []
  t = config.train
  ids = jax.ShapeDtypeStruct(
      (t.rows * t.max_per_row, config.model.text.max_len),
      jnp.int32,
      sharding=logical_sharding(jax.sharding.PartitionSpec("batch"), mesh),
  )
  weights = [x for x in jax.tree.leaves(frozen.abstract_params()) if len(x.shape) == 2]
  dense = sum(int(np.prod(x.shape)) for x in weights) - frozen.config.vocab_size * frozen.dim
  flops = 2 * dense * ids.shape[0] * ids.shape[1]  # matmuls per token (attention over <= Lt is small)
  return [_report("text_encode", frozen.lower_embed(mesh, ids), chip, chips, flops, 0.0, recompute=1.0)]
