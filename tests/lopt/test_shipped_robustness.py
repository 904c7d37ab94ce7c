"""The shipped optimizers meet the robustness checks (issue 10 C) on a fast subset.

The full check (every validation and test task, 10x the horizon, 3 seeds) is `python -m evaluation.robustness`;
its results are in the model cards. These tests keep the parts that failed before: a 64-512-512 ReLU MLP, where the
paper's absolute steps moved the weights by three times their own size on the first step; and the long runs where
relative steps compounded before ``max_scale_growth`` bounded them (two for the HRNN, one for the MLP optimizer);
and the MLP optimizer's first step on a 64-512-512-2 net, which ``max_relative_step = 0.1`` let double the loss.
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


def test_shipped_hrnn_passes_robustness_checks_where_relative_steps_compounded():
  # The two validation tasks where the release-4 candidate without max_scale_growth failed at 4x the 500-step horizon
  # (docs/model_card_hrnn.md): one patches16_conv seed went non-finite at ~1,500 steps after its output layer had
  # grown from RMS 0.29 to 160, and a wine_mlp seed spiked to 949x its initial loss at step 1,480. Same seeds as that
  # check (the harness's default key), 2,000 steps.
  suite = validation.validation_suite(['patches16_conv', 'wine_mlp'], num_steps=200)
  checks = robustness.check_robustness(harness.OptimizerSpec('hierarchical_rnn', lopt.hierarchical_rnn), suite,
                                       seeds=3, progress=False)
  assert all(c.passed for c in checks), robustness.markdown(checks)


def test_shipped_mlp_lopt_passes_robustness_checks_where_relative_steps_compounded():
  # Without max_scale_growth the MLP optimizer's relative steps grew the wine MLP's weights once its loss reached 0:
  # 15.8x the initial loss within 2,000 steps (46.7x within 5,000; docs/model_card_mlp_lopt.md). Same seeds.
  suite = validation.validation_suite(['wine_mlp'], num_steps=200)
  checks = robustness.check_robustness(harness.OptimizerSpec('mlp_lopt', lopt.mlp_lopt), suite, seeds=3,
                                       progress=False)
  assert all(c.passed for c in checks), robustness.markdown(checks)


def test_shipped_mlp_lopt_passes_robustness_checks_on_its_first_step_of_a_wide_net():
  # Release 5 (max_relative_step = 0.1) doubled this 64-512-512-2 net's loss on its first step, before its features
  # had any history: 2.11x, 1.55x and 1.61x the initial loss at step 1 on these three seeds. Release 6's cap of 0.03
  # gives 1.30x, 1.03x, 1.00x (docs/model_card_mlp_lopt.md). 150 steps covers the first step and the step-100 check.
  suite = validation.validation_suite(['patches8_photograph_mlp_512x512'], num_steps=15)
  checks = robustness.check_robustness(harness.OptimizerSpec('mlp_lopt', lopt.mlp_lopt), suite, seeds=3,
                                       progress=False)
  assert all(c.passed for c in checks), robustness.markdown(checks)
