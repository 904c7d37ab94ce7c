"""The ``[tasks]`` spellings of runs made before configs named their problems, so those runs stay resumable.

Until configs named their problems as data (``[tasks] problems = [...]``, ``[tasks] weights = {name = w}``; see
:class:`meta_train.run.config.TasksConfig`), each meta-training round's problems were a function of the library
(``tasks.hrnn_training_set_v2``, ...) or a ``module:attr`` hook in ``configs/``, and the weights of structure groups
a list of numbers in group order (``estimator.kwargs.group_weights``). The ``config.toml`` of runs made then
(``runs/*/``) are written that way, and their ``resume.npz`` store the fingerprint of that spelling. Both keep
working:

* :func:`upgrade`, applied to every config as it is loaded, rewrites such a spelling into the new form: the
  problems the function returned, in its order, and a positional weight list as weights by name (every problem of
  these sets is a structure group of its own, so group order is problem order; a test checks it);
* :func:`downgrade`, applied by :func:`meta_train.run.config.fingerprint`, gives a config whose problems are
  exactly one of these lists its old spelling back, so a run keeps its fingerprint whichever way its config is
  written.

:data:`LEGACY_PROBLEM_SETS` is frozen history: nothing is ever added to it, and an entry changes never (the runs'
fingerprints hash its name). New rounds list their problems in their config.
"""

from __future__ import annotations

import copy

_HRNN_V1 = (
    'quadratic_20_noise0.5', 'quadratic_25', 'quadratic_50_noise1', 'quadratic_100_noise2',
    'bowl_1', 'bowl_5_noise0.1',
    'softmax_10_bs100_sep2', 'softmax_100_bs50_sep1_noise0.1',
    'mlp_sigmoid_32_nf9_bs128', 'mlp_sigmoid_8x5_nf8_bs10', 'mlp_sigmoid_32x64_nf7_bs16',
    'beale', 'booth_noise1', 'sparse_quadratic_50', 'rescale132_quadratic_100',
)
_HRNN_V2 = _HRNN_V1 + ('synthetic_images_mlp_32_relu_bs64', 'synthetic_images_mlp_32x32_relu_bs32',
                       'mlp_relu_64x64_nf32_bs64')

#: Old ``tasks.family`` value -> the names of :data:`tasks.PROBLEMS` it stood for, in order.
LEGACY_PROBLEM_SETS: dict[str, tuple[str, ...]] = {
    # configs/hrnn_shipped.toml (runs/hrnn_shipped)
    'hrnn_training_set': _HRNN_V1,
    # configs/hrnn_shipped_v2.toml (runs/hrnn_shipped_v2)
    'hrnn_training_set_v2': _HRNN_V2,
    # configs/hrnn_shipped_v3.toml (runs/hrnn_shipped_v3)
    'hrnn_training_set_v3': _HRNN_V2 + ('synthetic_images_28px_mlp_32_relu_bs64',),
    # configs/mlp_lopt_shipped.toml (runs/mlp_lopt_shipped)
    'mlp_lopt_training_set': (
        'softmax_10_bs100_sep2', 'softmax_100_bs50_sep1', 'softmax_200_bs20_sep1.5',
        'mlp_sigmoid_32_nf9_bs128', 'mlp_sigmoid_32x64_nf7_bs16', 'mlp_sigmoid_8x5x3_nf12_bs200'),
    # configs/hrnn_round3.toml
    'configs.hrnn_round3_problems:training_set': _HRNN_V2 + (
        'synthetic_images_28px_mlp_128x128_relu_bs64', 'synthetic_images_mlp_256x256_relu_bs64',
        'synthetic_images_mlp_64_tanh_bs64', 'synthetic_images_autoencoder_64x16x64_relu_bs64'),
    # configs/hrnn_round3_pes_pilot.toml and configs/hrnn_round3_pes_bounded.toml (runs/hrnn_round3_pes_*)
    'configs.hrnn_round3_problems:pes_pilot_set': (
        'quadratic_50_noise1', 'softmax_10_bs100_sep2', 'mlp_relu_64x64_nf32_bs64',
        'synthetic_images_mlp_32x32_relu_bs32', 'synthetic_images_mlp_64_tanh_bs64',
        'synthetic_images_autoencoder_64x16x64_relu_bs64'),
}

_BY_PROBLEMS = {problems: family for family, problems in LEGACY_PROBLEM_SETS.items()}
assert len(_BY_PROBLEMS) == len(LEGACY_PROBLEM_SETS), 'two legacy spellings for one problem list'


def upgrade(data: dict) -> dict:
  """``data`` (a config as parsed from TOML) with an old ``tasks.family`` spelling rewritten as ``tasks.problems``,
  and a positional ``estimator.kwargs.group_weights`` of as many numbers as problems as ``tasks.weights`` (weights
  of 1, the default, are left out). Anything else is returned as it is (the schema then validates it)."""
  tasks = data.get('tasks') if isinstance(data, dict) else None
  family = tasks.get('family') if isinstance(tasks, dict) else None
  if not isinstance(family, str) or family not in LEGACY_PROBLEM_SETS or 'problems' in tasks:
    return data
  data = copy.deepcopy(data)
  tasks = data['tasks']
  names = list(LEGACY_PROBLEM_SETS[tasks.pop('family')])
  tasks['problems'] = names
  estimator = data.get('estimator')
  kwargs = estimator.get('kwargs') if isinstance(estimator, dict) else None
  weights = kwargs.get('group_weights') if isinstance(kwargs, dict) else None
  if (isinstance(weights, list) and len(weights) == len(names) and 'weights' not in tasks
      and not tasks.get('problems_prefix')):
    del kwargs['group_weights']
    tasks['weights'] = {n: w for n, w in zip(names, weights) if w != 1}
  return data


def _as_written(weight: float) -> float | int:
  """A weight as the committed runs' files wrote it: an integer when it is one."""
  return int(weight) if float(weight).is_integer() else weight


def downgrade(data: dict, default_family: str) -> dict:
  """``data`` (:func:`meta_train.run.config.to_dict` of a config) with its old spelling when ``tasks.problems`` is
  exactly one of :data:`LEGACY_PROBLEM_SETS` (and ``tasks.family``, ``kwargs``, ``num_structures`` are at their
  defaults): ``tasks.family`` = that name, and ``tasks.weights`` as the positional ``estimator.kwargs.group_weights``
  list (1 for a problem without a weight). Otherwise ``data`` itself."""
  tasks = data['tasks']
  family = _BY_PROBLEMS.get(tuple(tasks['problems']))
  if (family is None or tasks['family'] != default_family or tasks['kwargs'] or tasks['num_structures']
      or (tasks['weights'] and ('group_weights' in data['estimator']['kwargs'] or tasks['problems_prefix']))):
    return data
  data = copy.deepcopy(data)
  tasks = data['tasks']
  if tasks['weights']:
    data['estimator']['kwargs']['group_weights'] = [_as_written(tasks['weights'].get(n, 1))
                                                    for n in tasks['problems']]
  tasks.update(family=family, problems=[], weights={})
  return data

