import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sora_jax.diffusion.ddpm import DDPM
from sora_jax.diffusion.flow import FlowMatching, time_shift
from sora_jax.diffusion.loss import diffusion_loss

from helpers import init_params, packed, random_example, tiny_dit


def test_time_shift_moves_towards_noise_with_more_tokens():
  t = jnp.linspace(0.05, 0.95, 10)
  np.testing.assert_allclose(time_shift(t, 1.0), t, rtol=1e-6)
  assert bool(jnp.all(time_shift(t, 2.0) > t)) and bool(jnp.all(time_shift(t, 0.5) < t))


@pytest.mark.parametrize("objective", [FlowMatching(), DDPM("linear", "eps"), DDPM("cosine", "v")])
def test_exact_prediction_recovers_data(objective):
  """With the true target as the prediction, one sampler step from any t lands on x0."""
  rng = np.random.default_rng(0)
  x0, noise = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
  times = objective.sampling_times(4, jnp.ones(()))
  t, t_end = times[1], times[-1]
  xt = objective.corrupt(x0, noise, t)
  x = objective.step(xt, objective.target(x0, noise, t), t, t_end)
  np.testing.assert_allclose(x, x0, atol=1e-4)


@pytest.mark.parametrize("objective", [FlowMatching(), DDPM("linear", "v")])
def test_loss_falls_when_overfitting_one_batch(objective):
  rng = np.random.default_rng(0)
  examples = [random_example(rng, (2, 2, 2)), random_example(rng, (1, 3, 3), "a blue square moves left")]
  batch, _ = packed(examples, row_length=32)
  model = tiny_dit()
  params = init_params(model, batch)
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)
  key = jax.random.key(0)

  @jax.jit
  def step(params, opt_state):
    loss_fn = lambda p: diffusion_loss(lambda *a: model.apply({"params": p}, *a), objective, batch, key,
                                       shift_base_tokens=8)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for _ in range(40):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0], losses


def test_loss_ignores_padding_and_conditioning_tokens():
  rng = np.random.default_rng(0)
  ex = random_example(rng, (2, 2, 2))
  ex["cond_mask"] = np.arange(8) < 4  # first frame given clean
  batch, _ = packed([ex], row_length=16)
  model = tiny_dit()
  params = init_params(model, batch)
  apply = lambda *a: model.apply({"params": params}, *a)
  loss = diffusion_loss(apply, FlowMatching(), batch, jax.random.key(0), shift_base_tokens=8)
  garbage = dict(batch, tokens=batch["tokens"].copy())
  garbage["tokens"][0, 8:] = 1e3  # padding
  assert float(loss) == pytest.approx(float(diffusion_loss(apply, FlowMatching(), garbage, jax.random.key(0),
                                                           shift_base_tokens=8)), rel=1e-5)
  assert batch["loss_mask"][0, :4].sum() == 0 and batch["loss_mask"][0, 4:8].sum() == 4
