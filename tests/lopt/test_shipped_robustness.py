"""The shipped optimizers meet the robustness checks (issue 10 C) on a fast subset: the wide ReLU networks.

The full check (every validation and test task, 10x the horizon, 3 seeds) is `python -m evaluation.robustness`;
its results are in the model cards. This test keeps the part that failed before relative steps: a 64-512-512 ReLU
MLP, where the paper's absolute steps moved the weights by three times their own size on the first step.
"""

import pytest

import lopt
from evaluation import harness, heldout, robustness, validation

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('factory', [lopt.hierarchical_rnn, lopt.mlp_lopt], ids=['hierarchical_rnn', 'mlp_lopt'])
def test_shipped_optimizer_passes_robustness_checks_on_wide_relu_nets(factory):
  # 15-step budgets x 10 = 150 steps: past the "below f_0 by step 100" check and through the early steps where the
  # blow-ups happened (step 1 to ~20).
  suite = (validation.validation_suite(['patches8_mlp_512x512'], num_steps=15)
           + heldout.heldout_suite(['digits_mlp_512x512'], num_steps=15))
  checks = robustness.check_robustness(harness.OptimizerSpec(factory.__name__, factory), suite, seeds=2,
                                       progress=False)
  assert all(c.passed for c in checks), robustness.markdown(checks)
