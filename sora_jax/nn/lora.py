"""LoRA (Hu et al., 2021) on chosen Dense layers of a model, without a change to its code.

Inside `lora(spec)`, every `nn.Dense` call whose layer name (its module path, e.g.
'block_1/self_attn/query', or 'blocks/block_1/self_attn/query' with scanned layers) matches one
of `spec.targets` (regular expressions, searched) gains a low-rank path:

  y = x W + b + (alpha / rank) * (x A) B,   A [in, rank] ~ N(0, 1/in), B [rank, out] = 0

so the model's output is the base's exactly until B moves (LoRA's zero init). A and B are params
of the Dense itself ('lora_a', 'lora_b'), so under `nn.scan` they stack per layer as its kernel
does, and they carry the kernel's logical axis names (in, or out) for the mesh. `block_patterns`
keeps only layers inside DiT blocks of those attention patterns: MotionLoRA (AnimateDiff) is LoRA
on the temporal attention alone.

The hook is flax's public `nn.intercept_methods`: the same DiT class serves base, fine-tune and
sampling, and a run with no adapter traces exactly the model it always did.
"""

import contextlib
import dataclasses
import re

import flax.linen as nn
import jax.numpy as jnp

LORA_KEYS = ("lora_a", "lora_b")


@dataclasses.dataclass(frozen=True)
class LoraSpec:
  rank: int
  alpha: float
  targets: tuple  # regexes searched in layer names
  block_patterns: tuple = ()  # only DiT blocks of these attention patterns (empty: any block)

  @property
  def scale(self):
    return self.alpha / self.rank

  def wants(self, module):
    """Whether this Dense gets a low-rank path; the names of the targets that chose it."""
    if self.block_patterns and _block_pattern(module) not in self.block_patterns:
      return ()
    name = layer_name(module)
    return tuple(t for t in self.targets if re.search(t, name))


def layer_name(module):
  return "/".join(module.path)


def _block_pattern(module):
  """The attention pattern of the DiT block holding `module` (None outside blocks)."""
  while module is not None:
    if isinstance(getattr(module, "pattern", None), str):
      return module.pattern
    module = module.parent
  return None


def _named_init(init, kernel, axes):
  """`init` carrying the base kernel's logical names on the axes they share (None: unnamed)."""
  names = getattr(kernel, "names", None)  # boxed at init (logical partitioning), plain at apply
  if names is None:
    return init
  return nn.with_logical_partitioning(init, tuple(names[i] if i is not None else None for i in axes))


@contextlib.contextmanager
def lora(spec, seen=None):
  """Within it, Dense layers chosen by `spec` add their low-rank path. `seen`, a dict, collects
  target -> the layer names it chose (traced calls; the check that each target matched)."""

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, nn.Dense):
      return next_fun(*args, **kwargs)
    chosen = spec.wants(module)
    if not chosen:
      return next_fun(*args, **kwargs)
    if seen is not None:
      for target in chosen:
        seen.setdefault(target, set()).add(layer_name(module))
    y = next_fun(*args, **kwargs)
    x = args[0] if args else kwargs["inputs"]
    kernel = module.scope.get_variable("params", "kernel")
    fan_in = x.shape[-1]
    a = module.param(
        "lora_a",
        _named_init(nn.initializers.normal(fan_in**-0.5), kernel, (0, None)),
        (fan_in, spec.rank),
    )
    b = module.param(
        "lora_b", _named_init(nn.initializers.zeros_init(), kernel, (None, 1)), (spec.rank, module.features)
    )
    dtype = module.dtype or x.dtype
    delta = (x.astype(dtype) @ a.astype(dtype)) @ b.astype(dtype)
    return y + (spec.scale * delta).astype(y.dtype)

  with nn.intercept_methods(intercept):
    yield


def merge(params, scale):
  """`params` with each LoRA pair folded into its kernel, W + scale * A B (per layer where
  stacked), and the pair removed: the base architecture's params, for export and sampling."""
  if not isinstance(params, dict):
    return params
  if "lora_a" in params:
    rest = {k: v for k, v in params.items() if k not in LORA_KEYS}
    delta = jnp.einsum("...ir,...ro->...io", params["lora_a"], params["lora_b"])
    rest["kernel"] = (params["kernel"] + scale * delta).astype(params["kernel"].dtype)
    return rest
  return {k: merge(v, scale) for k, v in params.items()}
