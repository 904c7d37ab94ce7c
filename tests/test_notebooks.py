"""Every notebook in notebooks/ runs top to bottom without error (executed with nbclient, outputs discarded)."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / 'notebooks').glob('*.ipynb'))


def test_there_are_notebooks():
  assert NOTEBOOKS, 'notebooks/ holds no .ipynb file'


@pytest.mark.slow  # a kernel start plus a few jitted training runs: ~30 s
@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
  notebook = nbformat.read(path, as_version=4)
  # The kernel runs from a scratch directory: a notebook must not depend on (or litter) the working directory.
  NotebookClient(notebook, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}},
                 extra_arguments=['--HistoryManager.enabled=False']).execute()
  errors = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.get('outputs', [])
            if o.get('output_type') == 'error']
  assert not errors
