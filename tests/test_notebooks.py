"""The notebooks in notebooks/ and the examples of docs/extending.md run, and the notebooks are committed clean.

Notebooks are executed with nbclient in **quick mode**: ``LOPT_NOTEBOOK_QUICK=1`` in the kernel's environment makes
every notebook shrink its step counts (each reads it in its first code cell), so a notebook takes well under a minute
of CPU while still running every cell and drawing every figure. Run one in full by executing it without the variable.
The kernel gets the checkout on ``PYTHONPATH``, so it imports this tree's packages whatever is installed.
"""

import os
import pathlib
import re
import sys

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / 'notebooks').glob('*.ipynb'))

#: The environment variable that shrinks every notebook's step counts (documented in each notebook's first cell).
QUICK_ENV = 'LOPT_NOTEBOOK_QUICK'

#: The least number of figures (image/png outputs) each notebook must draw; every notebook must be listed.
MIN_FIGURES = {
    '01_quickstart.ipynb': 1,
    '02_flax_nnx.ipynb': 2,
    '03_your_own_task.ipynb': 2,
    '04_why_meta_training_is_hard.ipynb': 4,
    '05_inside_the_hrnn.ipynb': 5,
    '06_meta_training_at_scale.ipynb': 2,
}


def test_there_are_notebooks():
  assert NOTEBOOKS, 'notebooks/ holds no .ipynb file'


def test_every_notebook_has_a_figure_count():
  assert sorted(MIN_FIGURES) == [p.name for p in NOTEBOOKS], 'list each notebook in MIN_FIGURES'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
  """Outputs are stripped before committing: they bloat diffs and go stale (the test suite regenerates them)."""
  notebook = nbformat.read(path, as_version=4)
  dirty = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == 'code'
           and (cell.get('outputs') or cell.get('execution_count') is not None)]
  assert not dirty, (f'{path.name}: code cells {dirty} hold outputs or execution counts; strip them (e.g. '
                     '`jupyter nbconvert --clear-output --inplace` or nbstripout) before committing.')


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_reads_the_quick_switch(path):
  source = '\n'.join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == 'code')
  if path.name != '01_quickstart.ipynb':  # the quickstart is short as written
    assert QUICK_ENV in source, f'{path.name} does not read {QUICK_ENV}, so the test suite cannot shrink it'


@pytest.mark.slow  # quick mode, in the full suite on 2 cores: 15 s (01) to 82 s (06); ~5 min for all six
@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
  monkeypatch.setenv(QUICK_ENV, '1')
  # Quick mode runs each program a few times, so compiling dominates: XLA's backend optimisations (LLVM passes) cost
  # more than they save (notebook 04: 122 s -> 43 s, 03: 91 s -> 45 s, measured alone on 2 cores). What the test
  # checks (every cell runs, every figure is drawn) does not depend on how the backend schedules the operations.
  monkeypatch.setenv('XLA_FLAGS', (os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip())
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
  monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
  notebook = nbformat.read(path, as_version=4)
  # The kernel runs from a scratch directory: a notebook must not depend on (or litter) the working directory.
  NotebookClient(notebook, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}},
                 extra_arguments=['--HistoryManager.enabled=False']).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.get('outputs', [])]
  errors = [o for o in outputs if o.get('output_type') == 'error']
  assert not errors
  figures = sum('image/png' in o.get('data', {}) for o in outputs)
  assert figures >= MIN_FIGURES[path.name], f'{path.name} drew {figures} figures, expected >= {MIN_FIGURES[path.name]}'
  assert not list(tmp_path.iterdir()), f'{path.name} left files in its working directory'


# ----------------------------------------------------------------------------------------------------------------
# docs/extending.md: its code blocks are the examples a newcomer copies, so they are executed here.

EXTENDING = ROOT / 'docs' / 'extending.md'


def _code_blocks(text: str) -> list[tuple[str, str]]:
  """``(info string, code)`` of every fenced block of a Markdown text."""
  return [(m.group(1).strip(), m.group(2)) for m in re.finditer(r'^```([^\n]*)\n(.*?)^```', text, re.S | re.M)]


@pytest.mark.slow  # compiles a few small meta-training steps: ~30 s on 2 loaded cores
def test_extending_examples_run(tmp_path, monkeypatch):
  """Writes the ``python file=NAME`` blocks to files, then runs the ``python`` blocks in order in one namespace."""
  blocks = _code_blocks(EXTENDING.read_text())
  files = {info.split('file=')[1]: code for info, code in blocks if info.startswith('python file=')}
  toml = {info.split('file=')[1]: code for info, code in blocks if info.startswith('toml file=')}
  scripts = [code for info, code in blocks if info == 'python']
  assert files and toml and scripts, 'docs/extending.md lost its example blocks'
  for name, code in {**files, **toml}.items():
    (tmp_path / name).write_text(code)
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  namespace = {'__name__': 'extending_md'}
  try:
    for code in scripts:
      exec(compile(code, str(EXTENDING), 'exec'), namespace)  # pylint: disable=exec-used
  finally:
    for name in files:
      sys.modules.pop(pathlib.Path(name).stem, None)
