"""``max_scale_growth``, the bound on relative steps shared by the HRNN and the MLP optimizer (docs/algorithms.md
§2.11, §3.4): the scale a tensor's step is proportional to is ``min(max(rms(w), floor), k max(rms(w_0), floor))``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt import HierarchicalRNN, MLPLOpt

# Each architecture with relative steps, uncapped and capped at k = 2 (the HRNN's initial rates fixed, so that both
# draw the same l).
ARCHITECTURES = {
    'hierarchical_rnn': lambda **kw: HierarchicalRNN(lr_init_range=(1e-3, 1e-3), step_scale='relative', **kw),
    'mlp_lopt': lambda **kw: MLPLOpt(step_scale='relative', **kw),
}


@pytest.mark.parametrize('make', ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_max_scale_growth_caps_the_relative_scale_at_a_multiple_of_the_initial_rms(make):
  """Weights grown 10x since init (the state made at w_0) get steps k/10 of the uncapped optimizer's at the same
  weights; weights grown by less than k get exactly the uncapped steps; a tensor at zero keeps the floor."""
  uncapped, capped = make(), make(max_scale_growth=2.0)
  meta = uncapped.init(jax.random.PRNGKey(0))
  grads = {'w': jnp.array([[0.3, -1.0], [2.0, 0.5]]), 'b': jnp.array([0.1, -0.2])}
  initial = {'w': jnp.array([[1.0, -2.0], [0.5, 3.0]]), 'b': jnp.zeros(2)}

  def update(arch, params):
    tx = arch.transform(meta)
    return tx.update(grads, tx.init(initial), params)[0]

  for growth, expected_ratio in ((1.5, 1.0), (10.0, 2.0 / 10.0)):
    params = {'w': growth * initial['w'], 'b': initial['b']}
    got, reference = update(capped, params), update(uncapped, params)
    # Only the scalar factor differs, so the ratio is exact up to float32 rounding of one multiply.
    np.testing.assert_allclose(got['w'], expected_ratio * reference['w'], rtol=1e-6)
    np.testing.assert_array_equal(got['b'], reference['b'])


@pytest.mark.parametrize('architecture', [HierarchicalRNN, MLPLOpt], ids=['hierarchical_rnn', 'mlp_lopt'])
def test_max_scale_growth_is_checked(architecture):
  with pytest.raises(ValueError, match="needs step_scale='relative'"):
    architecture(max_scale_growth=2.0)
  for bad in (0.0, -1.0, float('nan'), float('inf')):
    with pytest.raises(ValueError, match='max_scale_growth must be None or a finite number > 0'):
      architecture(step_scale='relative', max_scale_growth=bad)
