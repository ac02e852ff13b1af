"""Keep JAX from starting libtpu on a machine without a TPU.

With libtpu installed (the `tpu` extra, which `sora-jax aot` needs) and JAX_PLATFORMS unset, JAX
initialises every backend it knows, the TPU one included, on any machine. Without a TPU, jax sets
TPU_SKIP_MDS_QUERY (there is no metadata server to ask), libtpu fills TPU_ACCELERATOR_TYPE and
TPU_WORKER_HOSTNAMES with "WARNING: could not determine ..." placeholders, fails to parse them and
prints "E0000 ... INVALID_ARGUMENT: unexpected worker hostname" with a source-location trace
before JAX falls back to the CPU; libtpu's failure signal handler also stays installed, so a
SIGTERM (`timeout`, a scheduler) prints a native stack trace. Naming the platforms skips that
backend.
Setting TPU_WORKER_HOSTNAMES and the like instead would quiet libtpu but still start it for
nothing, and would override the slice that `aot` sets up for the topology it compiles for.
`aot` is unaffected: it loads libtpu through the topology API, which JAX_PLATFORMS does not gate.
"""

import glob
import importlib.util
import os
import pkgutil
import sys
from importlib import metadata

TPU_DEVICES = ("/dev/accel*", "/dev/vfio/[0-9]*")  # TPU v2-v4 chips; v5e and later (VFIO groups)
# As jax's hardware_utils: NVIDIA, WSL2 (/dev/dxg, NVIDIA or AMD), AMD (ROCm's /dev/kfd).
GPU_DEVICES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def _present(patterns):
  return any(glob.glob(pattern) for pattern in patterns)


def _cuda_plugin_installed():
  """jax[cuda12] / jax[cuda13]: a `jax_plugins` module or entry point named for CUDA."""
  names = {entry.name for entry in metadata.entry_points(group="jax_plugins")}
  namespace = importlib.util.find_spec("jax_plugins")
  if namespace is not None:
    names |= {module.name for module in pkgutil.iter_modules(namespace.submodule_search_locations)}
  return any("cuda" in name for name in names)


def platforms_without_tpu():
  """JAX_PLATFORMS for this machine, or None to leave JAX's own search.

  A TPU device, or one of a GPU that is not jax[cuda]'s (ROCm, or none installed, when JAX hints
  to install it), leaves the search to JAX: a wrong guess would cost an accelerator, not a log
  line. "cuda" comes first: the first platform named is JAX's default.
  """
  if _present(TPU_DEVICES):
    return None
  if _present(GPU_DEVICES):
    return "cuda,cpu" if _cuda_plugin_installed() else None
  return "cpu"


def skip_absent_tpu():
  """Set JAX_PLATFORMS where no TPU is present; call it before anything imports jax.

  jax reads JAX_PLATFORMS once, on import, so once it is imported this changes nothing. A
  JAX_PLATFORMS the user set, even empty (JAX's own search), wins.
  """
  if "JAX_PLATFORMS" in os.environ or "jax" in sys.modules:
    return
  platforms = platforms_without_tpu()
  if platforms:
    os.environ["JAX_PLATFORMS"] = platforms
