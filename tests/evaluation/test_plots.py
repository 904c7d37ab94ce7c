"""Tests of the report figures (evaluation/plots.py), on hand-made reports: no training, no pixels compared."""

import math

import matplotlib.collections
import numpy as np
import pytest

from evaluation import harness, plots


def _result(seeds, steps=100, start=10.0, rate=0.03, lr=None, test=True, eval_every=10, offset=0.0):
  """Exponentially decaying curves (a different factor per seed) and test losses every ``eval_every`` steps."""
  factors = 1.0 + 0.1 * np.arange(seeds)[:, None]
  train = start * factors * np.exp(-rate * np.arange(steps))[None] + offset
  test_steps = np.arange(1, steps // eval_every + 1) * eval_every
  test_loss = 1.1 * start * factors * np.exp(-rate * test_steps)[None] + offset if test else None
  return harness.RunResult(train, test_loss, test_steps, learning_rate=lr)


def _task(name, results, has_test_split=True, steps=100):
  return harness.TaskReport(harness.SuiteEntry(name, None, steps, has_test_split), results, {}, {})


def _report(tasks, candidates=('mine',), baselines=('adam_tuned', 'adam_1e-3')):
  return harness.Report(tasks, candidates, baselines, speedup_horizon=4.0)


def _bands(ax):
  return [c for c in ax.collections if isinstance(c, matplotlib.collections.PolyCollection)]


def test_format_lr_and_labels_name_the_tuned_learning_rate():
  assert plots.format_lr(10**-2.5) == '3.2e-3'
  assert plots.format_lr(1e-3) == '1e-3'
  assert plots.format_lr(0.1) == '1e-1'
  assert plots.format_lr(1.0) == '1'
  assert plots.optimizer_label('adam_tuned', _result(1, lr=10**-2.5)) == 'adam (tuned, lr=3.2e-3)'
  assert plots.optimizer_label('adam_1e-3', _result(1)) == 'adam_1e-3'
  diverged = _result(1)
  diverged.train_loss[0, -1] = np.nan
  assert plots.optimizer_label('mine', diverged) == 'mine [non-finite]'


def test_smoothing_ends_at_the_reports_final_loss():
  curves = np.random.default_rng(0).random((3, 200)) + 0.5
  window = plots.smoothing_window(200)
  smoothed = plots.smooth(curves, window)
  assert window == 10 and smoothed.shape == curves.shape
  np.testing.assert_allclose(smoothed[:, 0], curves[:, 0])  # the start averages the steps so far
  np.testing.assert_allclose(smoothed[:, 4], curves[:, :5].mean(axis=1))
  assert np.mean(smoothed[:, -1]) == pytest.approx(harness.final_loss(curves))
  # Losses many decades apart keep their precision (no cumulative-sum differences).
  tiny = plots.smooth(np.array([[1e3, 1e-20, 1e-30, 1e-30]]), 2)
  assert tiny[0, -1] == pytest.approx(1e-30, rel=1e-9)


def test_curve_figure_has_bands_test_loss_tuned_lr_and_log_scale():
  results = {'mine': _result(3), 'adam_tuned': _result(3, rate=0.02, lr=3e-3), 'adam_1e-3': _result(3, rate=0.01)}
  fig = plots.curve_figure(_task('digits', results), list(results), candidates=('mine',))
  ax_train, ax_test = fig.axes
  # One min..max band per optimizer in each panel, since there are several seeds.
  assert len(_bands(ax_train)) == 3 and len(_bands(ax_test)) == 3
  assert 'min–max over 3 seeds' in ax_train.get_title()
  # The test loss: one line per optimizer at the evaluation steps.
  test_lines = ax_test.get_lines()
  assert len(test_lines) == 3
  np.testing.assert_array_equal(test_lines[0].get_xdata(), results['mine'].test_steps)
  assert ax_test.get_ylabel() == 'test loss'
  # Legend: the tuned learning rate is in the label.
  labels = [t.get_text() for t in fig.legends[0].get_texts()]
  assert labels == ['mine', 'adam (tuned, lr=3e-3)', 'adam_1e-3']
  # From 10 down to 10 * exp(-3) ~ 0.5 and below: more than a decade, so a log axis.
  assert ax_train.get_yscale() == 'log'
  assert '3 seeds' in fig.get_suptitle() and '100 steps' in fig.get_suptitle() and 'digits' in fig.get_suptitle()


def test_curve_figure_without_test_split_or_seeds_or_decades():
  results = {'mine': _result(1, start=1.0, rate=0.001, offset=1.0, test=False),
             'adam_tuned': _result(1, start=1.0, rate=0.002, offset=1.0, lr=0.01, test=False)}
  fig = plots.curve_figure(_task('quad', results, has_test_split=False), list(results))
  assert len(fig.axes) == 1  # no test panel
  ax = fig.axes[0]
  assert _bands(ax) == []  # one seed: no band, and the title says so
  assert '1 seed, no band' in ax.get_title()
  assert ax.get_yscale() == 'linear'  # between 1 and 2: not a decade
  assert 'no test split' in fig.get_suptitle()


def test_log_axis_draws_a_loss_of_zero_on_its_bottom_edge_and_says_so():
  zero = _result(2, start=1.0, rate=0.2, lr=1.0, test=False)
  zero.train_loss[:, 50:] = 0.0  # e.g. a cross-entropy that underflows
  results = {'mine': _result(2, start=1.0, rate=0.1, test=False), 'adam_tuned': zero}
  fig = plots.curve_figure(_task('underflow', results, has_test_split=False), list(results))
  ax = fig.axes[0]
  assert ax.get_yscale() == 'log'
  assert [t.get_text() for t in fig.legends[0].get_texts()] == ['mine', 'adam (tuned, lr=1) [reaches 0]']
  adam_mean = [line for line in ax.get_lines() if line.get_label().startswith('adam')][0]
  assert adam_mean.get_ydata()[-1] == pytest.approx(ax.get_ylim()[0])  # on the edge, not dropped from the plot


def test_a_transient_spike_does_not_ask_for_a_log_axis():
  assert plots.uses_log_scale([np.array([30.0, 300.0, 20.0, 15.0])], initial=30.0) is False
  assert plots.uses_log_scale([np.array([30.0, 3.0, 2.0])], initial=30.0) is True
  assert plots.uses_log_scale([np.array([30.0, 3.0, -1.0])], initial=30.0) is False


def test_short_log_axes_label_plain_numbers():
  labels = [plots._minor_log_label(y) for y in (0.2, 0.3, 0.4, 5.0, 20.0, 70.0)]  # pylint: disable=protected-access
  assert labels == ['0.2', '0.3', '', '5', '20', '']
  results = {'mine': _result(2, start=15.0, rate=0.03, test=False), 'adam_tuned': _result(2, start=15.0, rate=0.01,
                                                                                       lr=0.1, test=False)}
  fig = plots.curve_figure(_task('norm', results, has_test_split=False), list(results))
  ax = fig.axes[0]
  assert ax.get_yscale() == 'log'  # 15 down to 15 * exp(-3) ~ 0.75: over a decade, under three
  assert ax.yaxis.get_major_formatter()(10.0, 0) == '10'


def _summary_report():
  """Three tasks; 'mine' diverges on one, and the third task's losses are negative (no log ratio there)."""
  def results(mine):
    return {'mine': mine, 'adam_tuned': _result(2, lr=1e-3, test=False), 'adam_1e-3': _result(2, rate=0.01,
                                                                                               test=False)}
  diverged = _result(2, rate=0.05, test=False)
  diverged.train_loss[:, -3:] = np.inf
  negative = {name: _result(2, rate=0.02, offset=-20.0, test=False) for name in ('mine', 'adam_tuned', 'adam_1e-3')}
  tasks = [_task('a', results(_result(2, rate=0.05, test=False)), has_test_split=False),
           _task('b', results(diverged), has_test_split=False),
           _task('c', negative, has_test_split=False)]
  return _report(tasks)


def test_summary_counts_every_task_once_per_optimizer():
  report = _summary_report()
  rows = {row.name: row for row in plots.summary_data(report)}
  assert list(rows) == ['mine', 'adam_1e-3']  # tuned Adam is the reference, not a row
  mine = rows['mine']
  assert list(mine.finite) == ['a'] and mine.diverged == ['b'] and mine.undefined == ['c'] and mine.zero == []
  assert mine.finite['a'] == pytest.approx(math.log10(report.tasks[0].results['mine'].final_loss
                                                      / report.tasks[0].results['adam_tuned'].final_loss))
  assert mine.finite['a'] < 0  # faster decay than tuned Adam
  assert rows['adam_1e-3'].finite.keys() == {'a', 'b'} and rows['adam_1e-3'].undefined == ['c']
  assert all(row.num_tasks == 3 for row in rows.values())
  assert mine.iqm == pytest.approx(report.log_ratio_iqm('mine'))
  assert mine.reasons == {'b': 'diverged', 'c': "tuned Adam's final loss is negative"}


def test_summary_figure_draws_one_point_per_task_and_the_non_finite_ones_apart():
  report = _summary_report()
  fig = plots.summary_figure(report)
  ax, ax_out = fig.axes
  points = {c.get_gid(): len(c.get_offsets()) for a in (ax, ax_out) for c in a.collections if c.get_gid()}
  assert points['mine'] == 1 and points['mine:diverged'] == 1 and points['mine:undefined'] == 1
  assert points['adam_1e-3'] == 2 and points['adam_1e-3:undefined'] == 1 and points['adam_1e-3:diverged'] == 0
  for name in ('mine', 'adam_1e-3'):  # every task exactly once per optimizer
    assert sum(n for gid, n in points.items() if gid.split(':')[0] == name) == len(report.tasks)
  assert [t.get_text() for t in ax_out.get_xticklabels()] == ['loss 0\n(−∞)', 'diverged\n(+∞)', 'no ratio']
  # The zero line (tuned Adam) and the IQM marks are in the legend; the row labels count the finite tasks.
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  assert 'tuned Adam' in legend and any('IQM' in text for text in legend)
  assert any(line.get_xdata()[0] == 0.0 and line.get_xdata()[1] == 0.0 for line in ax.get_lines())
  rows_top_down = [text for _, text in sorted(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())),
                                               reverse=True)]
  assert rows_top_down == ['mine\n1 of 3 tasks finite', 'adam_1e-3\n2 of 3 tasks finite']  # candidates on top
  # A footnote names the tasks without a finite ratio and why.
  assert fig.get_supxlabel() == (
      "Not a finite ratio: b (mine: diverged); c (all: tuned Adam's final loss is negative).")


def test_report_plot_writes_one_png_per_task_and_the_summary(tmp_path):
  results = {'mine': _result(2), 'adam_tuned': _result(2, rate=0.02, lr=3e-3), 'adam_1e-3': _result(2, rate=0.01)}
  report = _report([_task('with_test', results), _task('other', results, has_test_split=False)])
  paths = report.plot(str(tmp_path))
  assert [p.rsplit('/', 1)[1] for p in paths] == ['with_test.png', 'other.png', plots.SUMMARY_FILE]
  for path in paths:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
