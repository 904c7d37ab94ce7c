"""Tests of the config schema, TOML loading, overrides, and the shipped configs."""

import dataclasses
import glob
import os
import re
import typing

import pytest

from meta_train.run import build
from meta_train.run import config as config_lib
from meta_train.run import legacy
from meta_train.run.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = sorted(glob.glob(os.path.join(REPO, 'configs', '*.toml')))


def test_defaults_round_trip_through_toml_text():
  config = config_lib.loads('[run]\nseed = 7\n[estimator.truncation]\nname = "constant"\nkwargs = {length = 5}')
  assert config.run.seed == 7 and config.estimator.truncation.kwargs == {'length': 5}
  assert config_lib.loads(config_lib.dumps(config)) == config


def test_dumps_round_trips_awkward_values():
  config = config_lib.loads(
      '[tasks]\nkwargs = {dims = [2, 3], "odd key" = "a \\"quoted\\" \\\\ string", nested = {x = 1.5e-7}}')
  assert config_lib.loads(config_lib.dumps(config)) == config


@pytest.mark.parametrize('text, message', [
    ('[run]\nsed = 1', r"unknown config key 'run.sed'. Did you mean 'seed'\?"),
    ('[estimatr]\nname = "pes"', r"unknown config key 'estimatr'. Did you mean 'estimator'\?"),
    ('[estimator.truncaton]\nname = "x"', r"'estimator.truncaton'. Did you mean 'truncation'\?"),
    ('[meta_optimizer]\nlearning_rat = 1.0', r"Did you mean 'learning_rate'\?.*Valid names: clip_by_global_norm"),
])
def test_unknown_key_names_it_and_the_closest_valid_names(text, message):
  with pytest.raises(ConfigError, match=message):
    config_lib.loads(text)


@pytest.mark.parametrize('text, message', [
    ('[run]\nseed = 1.5', r"'run.seed' must be an integer, got 1.5"),
    ('[run]\nseed = true', r"'run.seed' must be an integer, got True"),
    ('[run]\nmeta_steps = 0', r"'run.meta_steps' must be > 0, got 0"),
    ('[run]\nkeep_checkpoints = 1', r"'run.keep_checkpoints' must be >= 2"),
    ('[meta_optimizer]\nlearning_rate = "fast"', r"'meta_optimizer.learning_rate' must be a number"),
    ('[meta_optimizer]\nlearning_rate = -1e-3', r"'meta_optimizer.learning_rate' must be > 0"),
    ('[meta_optimizer]\nclip_by_value = inf', r"'meta_optimizer.clip_by_value' must be finite"),
    ('[estimator]\nname = 3', r"'estimator.name' must be a str"),
    ('[tasks]\nkwargs = 3', r"'tasks.kwargs' must be a dict"),
    ('run = 3', r"section 'run' must be a table"),
])
def test_wrong_type_or_value_names_the_field(text, message):
  with pytest.raises(ConfigError, match=message):
    config_lib.loads(text)


def test_integer_is_accepted_for_a_float_field():
  assert config_lib.loads('[meta_optimizer]\nlearning_rate = 1').meta_optimizer.learning_rate == 1.0


@pytest.mark.parametrize('override, expected', [
    ('run.seed=3', ('run', 'seed', 3)),
    ('meta_optimizer.learning_rate=3e-4', ('meta_optimizer', 'learning_rate', 3e-4)),
    ('estimator.name="es"', ('estimator', 'name', 'es')),
    ('estimator.name=es', ('estimator', 'name', 'es')),  # a bare word is a string
    ('tasks.kwargs={dim = 3}', ('tasks', 'kwargs', {'dim': 3})),
])
def test_overrides_use_toml_literals(override, expected):
  config = config_lib.loads('', [override])
  section, field, value = expected
  assert getattr(getattr(config, section), field) == value


def test_override_reaches_into_kwargs_tables_and_keeps_file_values():
  config = config_lib.loads('[estimator.kwargs]\nstd = 0.01\nnum = 2',
                            ['estimator.kwargs.std=0.5', 'estimator.truncation.kwargs.length=[1, 2]'])
  assert config.estimator.kwargs == {'std': 0.5, 'num': 2}
  assert config.estimator.truncation.kwargs == {'length': [1, 2]}


@pytest.mark.parametrize('override, message', [
    ('run.sede=1', r"unknown config key 'run.sede'. Did you mean 'seed'\?"),
    ('run.seed', r'must look like dotted.key=value'),
    ('run..seed=1', r'empty key part'),
    ('run.seed.x=1', r"'run.seed' is a value, not a table"),
    ('run.seed=1e-3x', r"'run.seed' must be an integer, got '1e-3x'"),
])
def test_bad_overrides_are_named(override, message):
  with pytest.raises(ConfigError, match=message):
    config_lib.loads('[run]\nseed = 0', [override])


def test_missing_or_invalid_file_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match='does not exist'):
    config_lib.load(tmp_path / 'nope.toml')
  bad = tmp_path / 'bad.toml'
  bad.write_text('[run\nseed = 1')
  with pytest.raises(ConfigError, match='not valid TOML'):
    config_lib.load(bad)


def test_differences_lists_changed_fields():
  a = config_lib.loads('[run]\nseed = 1')
  b = config_lib.loads('[run]\nseed = 2\nmeta_steps = 5\n[estimator.kwargs]\nstd = 0.1')
  assert config_lib.differences(a, b) == {'run.seed': (1, 2), 'run.meta_steps': (1000, 5),
                                          'estimator.kwargs': ({}, '<unset>'),
                                          'estimator.kwargs.std': ('<unset>', 0.1)}


def _schema_classes(cls=config_lib.Config, seen=None):
  seen = [] if seen is None else seen
  seen.append(cls)
  for tp in typing.get_type_hints(cls).values():
    if dataclasses.is_dataclass(tp) and tp not in seen:
      _schema_classes(tp, seen)
  return seen


@pytest.mark.parametrize('cls', _schema_classes()[1:], ids=lambda c: c.__name__)
def test_every_schema_field_is_documented_in_the_docstring(cls):
  for field in dataclasses.fields(cls):
    assert re.search(rf'^\s+{field.name}: \S', cls.__doc__, re.M), f'{cls.__name__}.{field.name} lacks a docstring'


# --- the shipped configs -----------------------------------------------------------------------------------------


def test_the_expected_configs_are_shipped():
  names = {os.path.basename(p) for p in SHIPPED}
  assert {'quickstart.toml', 'wichrowska2017.toml', 'metz2019.toml', 'metz2020.toml', 'pes_quadratics.toml'} <= names


@pytest.mark.parametrize('path', SHIPPED, ids=os.path.basename)
def test_shipped_config_is_valid_and_every_key_is_commented(path):
  config_lib.load(path)
  with open(path, encoding='utf-8') as f:
    lines = f.read().splitlines()
  for i, line in enumerate(lines):
    stripped = line.strip()
    if not stripped or stripped.startswith('#') or stripped.startswith('[') or '=' not in stripped:
      continue  # blank, comment, table header, or the continuation of a multi-line array
    key = stripped.split('=', 1)[0].strip()
    documented = '#' in line.split('=', 1)[1] or (i > 0 and lines[i - 1].strip().startswith('#'))
    assert documented, f'{os.path.basename(path)}:{i + 1}: key {key!r} has no comment'


@pytest.mark.parametrize('path', SHIPPED, ids=os.path.basename)
def test_shipped_config_builds(path, monkeypatch):
  """Every name and keyword argument in the shipped configs is accepted by the component it selects."""
  monkeypatch.chdir(REPO)  # paths in configs (init_from) are relative to the repository root
  components = build.build(config_lib.load(path))
  assert components.evaluate is not None  # every shipped config evaluates against Adam


def test_build_rejects_unknown_names_and_kwargs_with_suggestions():
  config = config_lib.loads('[meta_optimizer]\nname = "adamm"')
  with pytest.raises(ConfigError, match=r"meta_optimizer.name.*'adamm'.*Did you mean 'adam'"):
    build.build_meta_optimizer(config.meta_optimizer)
  config = config_lib.loads('[meta_optimizer]\nkwargs = {b11 = 0.5}')
  with pytest.raises(ConfigError, match=r"unknown config key 'meta_optimizer.kwargs.b11'. Did you mean 'b1'"):
    build.build_meta_optimizer(config.meta_optimizer)
  config = config_lib.loads('[meta_optimizer]\nkwargs = {b1 = "half"}')
  with pytest.raises(ConfigError, match=r"meta_optimizer.kwargs.b1 must be"):
    build.build_meta_optimizer(config.meta_optimizer)
  config = config_lib.loads('[meta_optimizer]\nkwargs = {learning_rate = 0.5}')
  with pytest.raises(ConfigError, match=r"meta_optimizer.kwargs.learning_rate is set by the trainer"):
    build.build_meta_optimizer(config.meta_optimizer)
  config = config_lib.loads('[estimator]\nname = "pess"')
  with pytest.raises(ConfigError, match=r"estimator.name.*'pess'.*Did you mean 'pes'"):
    build.build_estimator(config.estimator, None, [], 1)
  with pytest.raises(ConfigError, match=r'cannot import module'):
    build.import_attr('no_such_module_xyz:f', 'estimator.name')


def test_meta_optimizer_clips_before_the_optax_update():
  import jax.numpy as jnp
  config = config_lib.loads('[meta_optimizer]\nname = "sgd"\nlearning_rate = 1.0\nclip_by_value = 0.5\n'
                            'clip_by_global_norm = 0')
  tx = build.build_meta_optimizer(config.meta_optimizer)
  params = {'w': jnp.zeros(3)}
  updates, _ = tx.update({'w': jnp.asarray([2.0, -0.1, -3.0])}, tx.init(params), params)
  assert updates['w'].tolist() == pytest.approx([-0.5, 0.1, 0.5])



def test_init_from_takes_meta_params_that_fit_and_names_a_misfit(tmp_path):
  """``init_from`` supplies meta-parameters only: hparams that leave their shapes alone (the initial learning
  rates) may differ from the file's; a file whose shapes differ is refused."""
  import jax
  import numpy as np
  import lopt
  saved_arch = lopt.HierarchicalRNN(lr_init_range=(1e-3, 1e-1))
  saved = saved_arch.init(jax.random.key(3))
  path = str(tmp_path / 'hrnn.npz')
  lopt.save(path, saved_arch, saved)
  config = config_lib.loads(f'[learned_optimizer]\narchitecture = "hierarchical_rnn"\n'
                            f'hparams = {{lr_init_range = [1e-4, 1e-2]}}\ninit_from = "{path}"')
  architecture = build.build_architecture(config.learned_optimizer)
  init = build.build_init_meta_params(architecture, config.learned_optimizer)
  for got, want in zip(jax.tree.leaves(init(jax.random.key(0))), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(got, want)
  config = config_lib.loads(f'[learned_optimizer]\narchitecture = "hierarchical_rnn"\n'
                            f'hparams = {{num_scales = 3}}\ninit_from = "{path}"')
  architecture = build.build_architecture(config.learned_optimizer)
  with pytest.raises(ConfigError, match='init_from.*do not fit.*shapes differ'):
    build.build_init_meta_params(architecture, config.learned_optimizer)


COMMITTED_RUNS = sorted(glob.glob(os.path.join(REPO, 'runs', '*', 'resume.npz')))


@pytest.mark.parametrize('path', COMMITTED_RUNS, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_committed_runs_keep_their_config_fingerprint(path):
  """Adding a field to the schema must not orphan the runs in runs/: their resume.npz stores the fingerprint of
  their config.toml, which must still be what fingerprint() computes (config.FINGERPRINT_OMITS_AT_DEFAULT)."""
  import json
  import numpy as np
  with np.load(path) as npz:
    stored = json.loads(npz['__header__'].tobytes())['metadata']['config_fingerprint']
  assert stored == config_lib.fingerprint(config_lib.load(os.path.join(os.path.dirname(path), 'config.toml')))


def test_a_field_omitted_at_its_default_counts_once_set():
  default = config_lib.loads('')
  assert config_lib.fingerprint(config_lib.loads('[meta_optimizer]\nweights = ""')) == config_lib.fingerprint(default)
  assert config_lib.fingerprint(config_lib.loads('[meta_optimizer]\nweights = "a.npz"')) != config_lib.fingerprint(
      default)


# --- named problems and their weights ------------------------------------------------------------------------------


def test_problems_and_weights_are_named_in_the_config():
  config = config_lib.loads('[tasks]\nproblems = ["bowl_1", "quadratic_20_noise0.5", "booth"]\n'
                            '[tasks.weights]\n"quadratic_20_noise0.5" = 2\nbooth = 0.5')
  assert config.tasks.problems == ['bowl_1', 'quadratic_20_noise0.5', 'booth']
  assert config.tasks.weights == {'quadratic_20_noise0.5': 2.0, 'booth': 0.5}
  assert isinstance(config.tasks.weights['quadratic_20_noise0.5'], float)
  text = config_lib.dumps(config)
  assert 'family' not in text  # unused next to named problems, so not written
  assert config_lib.loads(text) == config


@pytest.mark.parametrize('text, message', [
    ('problems = ["booth", "bowl_1", "booth"]', r"names 'booth' more than once.*tasks.weights"),
    ('problems = ["booth", 3]', r'must hold problem names \(strings\), got 3 at index 1'),
    ('problems = "booth"', r"'tasks.problems' must be a list"),
    ('family = "wichrowska2017"\nproblems = ["booth"]', r'tasks.family .* and tasks.problems are two ways'),
    ('problems = ["booth"]\nkwargs = {dim = 3}', r'tasks.kwargs applies to tasks.family'),
    ('problems = ["booth"]\nnum_structures = 2', r'num_structures .* does not apply to tasks.problems'),
    ('problems = ["bowl_1", "booth"]\nweights = {bowl_2 = 2}',
     r"weighs 'bowl_2', which is not in tasks.problems. Did you mean 'bowl_1'"),
    ('problems = ["booth"]\nweights = {booth = 0}', r"'tasks.weights.booth' must be a finite number > 0.*remove it"),
    ('problems = ["booth"]\nweights = {booth = "heavy"}', r"'tasks.weights.booth' must be a number"),
    ('problems = ["booth"]\nweights = {booth = true}', r"'tasks.weights.booth' must be a number"),
    ('problems = ["quadratic_20_noise0.5"]\nweights = {quadratic_20_noise0.5 = 2}',
     r'must be quoted, as in "quadratic_20_noise0.5" = 2'),
])
def test_named_problem_errors_say_what_to_do(text, message):
  with pytest.raises(ConfigError, match=message):
    config_lib.loads('[tasks]\n' + text)


def test_an_unknown_problem_is_named_with_the_closest_ones():
  config = config_lib.loads('[tasks]\nproblems = ["booth", "quadratic_20_noise.5"]')
  with pytest.raises(ConfigError, match=r"tasks.problems: unknown problem 'quadratic_20_noise.5'. Did you mean "
                                        r"'quadratic_20_noise0.5'.*tasks.PROBLEMS"):
    build.build_problems(config.tasks)


def test_weights_by_name_reach_the_structure_groups_and_shared_groups_split_by_weight():
  """bowl_1 and bowl_5 share a structure group: it weighs 3 + 1, and its instances draw bowl_1 3 times in 4."""
  import numpy as np
  config = config_lib.loads('[tasks]\nproblems = ["bowl_1", "booth", "bowl_5"]\nweights = {bowl_1 = 3}\n'
                            'num_tasks = 2\n[estimator]\nname = "tbptt"\nkwargs = {unroll_length = 2}')
  problems = build.build_problems(config.tasks)
  assert problems.names == ['bowl_1', 'booth', 'bowl_5'] and problems.weights == [3.0, 1.0, 1.0]
  groups = build.build(config).estimator.groups
  np.testing.assert_allclose(groups.weights, [4 / 5, 1 / 5])
  np.testing.assert_allclose(np.exp(groups.unrolls[0].family_log_weights), [3 / 4, 1 / 4], rtol=1e-6)
  unweighted = build.build(config_lib.loads('[tasks]\nproblems = ["bowl_1", "booth", "bowl_5"]')).estimator.groups
  np.testing.assert_allclose(unweighted.weights, [2 / 3, 1 / 3])


def test_weights_apply_to_a_problem_sets_names_and_not_to_unnamed_families():
  config = config_lib.loads('[tasks]\nfamily = "wichrowska2017"\nproblems_prefix = "bowl_"\nweights = {bowl_1 = 2}')
  problems = build.build_problems(config.tasks)
  assert problems.names[:2] == ['bowl_0.1', 'bowl_1'] and problems.weights[:2] == [1.0, 2.0]
  with pytest.raises(ConfigError, match=r"tasks.weights: unknown problem 'bowl_11'. Did you mean 'bowl_1'"):
    build.build_problems(config_lib.loads('[tasks]\nfamily = "wichrowska2017"\nweights = {bowl_11 = 2}').tasks)
  with pytest.raises(ConfigError, match=r"tasks.weights weighs problems by name, but tasks.family = "
                                        r"'QuadraticFamily' makes families without names"):
    build.build_problems(config_lib.loads('[tasks]\nweights = {quadratic = 2}').tasks)


def test_positional_group_weights_are_refused_for_named_problems():
  config = config_lib.loads('[tasks]\nproblems = ["bowl_1", "booth"]\n[estimator]\nkwargs = {group_weights = [1, 4]}')
  with pytest.raises(ConfigError, match=r'group_weights is a list of numbers in structure-group order.*'
                                        r'\[tasks\] weights = \{"problem name" = weight'):
    build.build(config)
  config = config_lib.loads('[tasks]\nproblems = ["bowl_1", "booth"]\n[estimator]\nkwargs = {family_weights = [1, 4]}')
  with pytest.raises(ConfigError, match=r'family_weights is set from tasks.weights'):
    build.build(config)
  # Families without names (sampled structures, one family) keep weighing structure groups by position.
  config = config_lib.loads('[estimator]\nname = "tbptt"\nkwargs = {group_weights = [1]}')
  assert list(build.build(config).estimator.groups.weights) == [1.0]


# --- the spelling of runs made before problems were named ----------------------------------------------------------


@pytest.mark.parametrize('family', sorted(legacy.LEGACY_PROBLEM_SETS))
def test_an_old_problem_set_spelling_loads_as_its_named_problems_with_the_same_fingerprint(family):
  old = config_lib.loads(f'[tasks]\nfamily = "{family}"\nkwargs = {{}}\nnum_tasks = 2')
  names = list(legacy.LEGACY_PROBLEM_SETS[family])
  assert old.tasks.problems == names and old.tasks.family == config_lib.TasksConfig.family
  new = config_lib.loads(f'[tasks]\nproblems = {names!r}\nnum_tasks = 2'.replace("'", '"'))
  assert new == old and config_lib.fingerprint(new) == config_lib.fingerprint(old)
  # ... which is the hash of the old spelling, field by field (what the runs' resume.npz store).
  assert config_lib.fingerprint(new) == _old_style_fingerprint({'tasks': {'family': family, 'kwargs': {},
                                                                          'num_tasks': 2}})
  # Other problems, or the same in another order, are another run.
  assert config_lib.fingerprint(config_lib.loads(f'[tasks]\nproblems = {names[::-1]!r}'.replace("'", '"'))) != (
      config_lib.fingerprint(config_lib.loads(f'[tasks]\nproblems = {names!r}'.replace("'", '"'))))


def _old_style_fingerprint(data: dict) -> str:
  """fingerprint() as it was before tasks.problems existed: the hash of every field of the config, as loaded."""
  import hashlib
  import json
  config = config_lib.to_dict(config_lib.loads(''))
  for section, values in data.items():
    config[section].update(values)
  del config['tasks']['problems'], config['tasks']['weights'], config['meta_optimizer']['weights']
  fields = {k: v for k, v in config_lib._flatten(config).items()  # pylint: disable=protected-access
            if k not in config_lib.RESUMABLE_FIELDS}
  return hashlib.sha256(json.dumps(fields, sort_keys=True, default=repr).encode('utf-8')).hexdigest()


def test_old_positional_group_weights_become_weights_by_name_with_the_same_fingerprint():
  family = 'hrnn_training_set_v3'
  names = legacy.LEGACY_PROBLEM_SETS[family]
  positional = [1] * 15 + [4] * 4
  old = config_lib.loads(f'[tasks]\nfamily = "{family}"\n[estimator]\nkwargs = {{unroll_length = 20, '
                         f'group_weights = {positional}}}')
  assert old.tasks.weights == {n: 4.0 for n in names[15:]} and old.estimator.kwargs == {'unroll_length': 20}
  by_name = '\n'.join(f'"{n}" = 4' for n in names[15:])
  new = config_lib.loads(f'[tasks]\nproblems = {list(names)!r}\n[tasks.weights]\n{by_name}\n'.replace("'", '"')
                         + '[estimator]\nkwargs = {unroll_length = 20}')
  assert new == old
  expected = _old_style_fingerprint({'tasks': {'family': family, 'kwargs': {}},
                                     'estimator': {'kwargs': {'unroll_length': 20, 'group_weights': positional}}})
  assert config_lib.fingerprint(new) == config_lib.fingerprint(old) == expected
  heavier = config_lib.loads(f'[tasks]\nproblems = {list(names)!r}\n'.replace("'", '"')
                             + f'weights = {{"{names[-1]}" = 5}}\n[estimator]\nkwargs = {{unroll_length = 20}}')
  assert config_lib.fingerprint(heavier) != expected


def test_each_old_problem_set_has_one_structure_group_per_problem():
  """What lets a positional group_weights list of the old spelling be read as weights by problem name."""
  import tasks
  from meta_train import structure_groups
  for family, names in legacy.LEGACY_PROBLEM_SETS.items():
    groups = structure_groups.group_indices([tasks.problem(n) for n in names])
    assert groups == [[i] for i in range(len(names))], family


CONFIGS_OF_RUNS = [(os.path.join(REPO, 'configs', os.path.basename(os.path.dirname(p)) + '.toml'),
                    os.path.join(os.path.dirname(p), 'config.toml')) for p in COMMITTED_RUNS]


@pytest.mark.parametrize('paths', [p for p in CONFIGS_OF_RUNS if os.path.exists(p[0])],
                         ids=lambda p: os.path.basename(p[0]))
def test_a_committed_runs_config_file_resumes_it(paths):
  """``python -m meta_train configs/X.toml --out runs/X`` resumes runs/X: same fingerprint, and no field outside
  RESUMABLE_FIELDS differs from its config.toml (which may still spell its problems the old way)."""
  config, recorded = (config_lib.load(p) for p in paths)
  assert config_lib.fingerprint(config) == config_lib.fingerprint(recorded)
  assert not {k for k in config_lib.differences(recorded, config) if k not in config_lib.RESUMABLE_FIELDS}


@pytest.mark.parametrize('name', ['hrnn_round3_pes_pilot', 'hrnn_shipped_v3'])
def test_a_committed_runs_resume_npz_loads_with_its_config_file(name, monkeypatch):
  """The meta-state of runs/X/resume.npz loads into the run that configs/X.toml builds (problems named as data;
  hrnn_shipped_v3 also weighs them by name where its run's config.toml has a positional list)."""
  import jax
  from meta_train.run import resume_state, trainer
  monkeypatch.chdir(REPO)
  config = config_lib.load(os.path.join('configs', f'{name}.toml'))
  trainer.prepare_output_dir(os.path.join('runs', name), config, write=False)
  components = build.build(config)
  shapes = jax.eval_shape(lambda k: trainer.init_state(components, k), jax.random.key(config.run.seed))
  compact = resume_state.load(os.path.join('runs', name, resume_state.RESUME_FILE), shapes, config)
  assert int(compact.step) > 0
