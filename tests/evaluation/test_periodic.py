"""The periodic evaluation the meta-trainer runs: the learned optimizer against Adam on fixed task instances."""

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / 'meta_train'))  # the shared quadratic fixture
import quadratic_fixture  # pylint: disable=wrong-import-position

from evaluation import periodic  # pylint: disable=wrong-import-position


def test_evaluator_ranks_a_good_and_a_useless_learning_rate_against_adam():
  sgd = quadratic_fixture.LearnedSGD()
  family = quadratic_fixture.DiagonalQuadraticFamily(dim=4)
  evaluate = periodic.make_evaluator(sgd, [family], num_tasks=5, num_steps=30, adam_learning_rate=1e-3)
  # lr 0.5 on curvatures in [0.5, 2] contracts every coordinate by at least 0.75 per step: after 30 steps the
  # loss is below 0.75^60 ≈ 3e-8 of its start, while Adam at 1e-3 moves each coordinate by at most 0.03.
  good = evaluate({'log_lr': np.log(np.float32(0.5))})
  assert good['lopt_win_rate'] == 1.0 and good['lopt_vs_adam_log_ratio'] < -5
  # lr e^-20 leaves the parameters where they started: Adam's small progress wins every task.
  useless = evaluate({'log_lr': np.float32(-20.0)})
  assert useless['lopt_win_rate'] == 0.0 and useless['lopt_vs_adam_log_ratio'] > 0
  # Both runs start from the same parameters: a useless optimizer's final loss is Adam's starting point.
  assert useless['adam_final_train_loss'] == pytest.approx(good['adam_final_train_loss'])
