"""muP, the maximal update parametrisation (Yang et al., Tensor Programs V), for the DiT.

Under `model.parametrization = "mup"` a model of width W trains like its base of width
B = `model.mup_base_width` (and equals it at W = B), so a learning rate tuned at B transfers:
- hidden weights (both dimensions grow with width: attention, MLP, adaLN, as in muP for DiTs,
  Zheng et al. 2025) keep their 1/fan_in init and get Adam learning rate x B / W;
- input weights (only the output dimension grows: patch embedding, caption projection) keep
  their base init variance and learning rate;
- output weights (only the input dimension grows: the zero-initialised readout) get an init
  variance x (B / W)^2 and learning rate x B / W;
- vectors (biases, norm scales) and width-free weights (the caption encoder) are unchanged;
- attention logits scale as 1/d rather than 1/sqrt(d) in the head size d (equal at the base
  head size `model.mup_base_head_dim`: a family at a fixed head size keeps 1/sqrt(d));
- Adam's epsilon x B / W, as the gradients of hidden weights shrink with width.

Roles are read off the parameter shapes at two widths, so a new layer needs no table entry.
The standard parametrisation leaves everything as it was (multipliers of 1, no rescaling).
"""

import jax
import numpy as np
import optax

PARAMETRIZATIONS = ("standard", "mup")
ROLES = ("hidden", "input", "output", "vector", "fixed")


def _abstract_params(config, width):
  """Parameter shapes of the DiT at `width` (nothing is computed)."""
  from sora_jax.models.build import dit_param_shapes  # here: build imports this module

  c = config.copy_and_resolve_references()
  c.model.width = width
  return dit_param_shapes(c)


def _key(path):
  """A parameter's name: its dict keys (boxes of partitioning metadata add other entries)."""
  return "/".join(str(p.key) for p in path if isinstance(p, jax.tree_util.DictKey))


def param_roles(config):
  """{parameter name: (role, scales)}: `scales` says which dimensions grow with width."""
  width = config.model.width
  at_w = _abstract_params(config, width)
  at_2w = {
      _key(p): x.shape
      for p, x in jax.tree_util.tree_flatten_with_path(_abstract_params(config, 2 * width))[0]
  }
  roles = {}
  for path, x in jax.tree_util.tree_flatten_with_path(at_w)[0]:
    scales = tuple(a != b for a, b in zip(x.shape, at_2w[_key(path)]))
    if len(x.shape) < 2:
      role = "vector"
    elif scales[-2] and scales[-1]:
      role = "hidden"
    elif scales[-1]:
      role = "input"
    elif scales[-2]:
      role = "output"
    else:
      role = "fixed"
    roles[_key(path)] = (role, scales)
  return roles


def width_ratio(model_cfg):
  """B / W: the base width over this width."""
  return model_cfg.mup_base_width / model_cfg.width


def lr_multiplier(role, ratio):
  return ratio if role in ("hidden", "output") else 1.0


def init_multiplier(role, shape, scales, ratio):
  """Factor on a Xavier-initialised kernel for muP's variance: the base variance 2 / (fan_in +
  fan_out) at base width, times B / W (hidden, 1/fan_in) or (B / W)^2 (output), or as is (input)."""
  if role not in ("hidden", "input", "output"):
    return 1.0
  fan_in, fan_out = shape[-2], shape[-1]
  base_in, base_out = (f * ratio if s else f for f, s in zip((fan_in, fan_out), scales[-2:]))
  target = 2.0 / (base_in + base_out) * {"hidden": ratio, "input": 1.0, "output": ratio**2}[role]
  return float(np.sqrt(target / (2.0 / (fan_in + fan_out))))


class Mup:
  """The muP pieces of one config: init rescaling, learning-rate multipliers, Adam's epsilon and
  the attention-logit multiplier. `None` from `of(config)` under the standard parametrisation."""

  def __init__(self, config):
    self.roles = param_roles(config)
    self.ratio = width_ratio(config.model)

  @staticmethod
  def of(config):
    return Mup(config) if config.model.parametrization == "mup" else None

  def _map(self, fn, tree):
    return jax.tree_util.tree_map_with_path(lambda p, x: fn(self.roles[_key(p)], x), tree)

  def rescale_init(self, params):
    return self._map(lambda rs, x: x * init_multiplier(rs[0], x.shape, rs[1], self.ratio), params)

  def scale_updates(self):
    """An optax transformation: each update times its parameter's learning-rate multiplier."""

    def update(updates, state, params=None):
      del params
      return self._map(lambda rs, u: u * lr_multiplier(rs[0], self.ratio), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def attention_logit_multiplier(model_cfg):
  """Factor on queries that turns the kernels' 1/sqrt(d) logits into muP's sqrt(d0) / d."""
  if model_cfg.parametrization != "mup":
    return 1.0
  return float(np.sqrt(model_cfg.mup_base_head_dim / (model_cfg.width // model_cfg.num_heads)))


def adam_eps(train_cfg, model_cfg):
  return train_cfg.adam_eps * (width_ratio(model_cfg) if model_cfg.parametrization == "mup" else 1.0)
