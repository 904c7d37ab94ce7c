"""What a meta-training run writes for people to read: metrics.jsonl, TensorBoard events, a PNG of the curves.

Files in the output directory:

* ``metrics.jsonl``: one JSON object per logged step, ``{"step": ..., "meta_loss": ..., ...}``;
* ``evaluation.jsonl``: one object per periodic evaluation (learned optimizer vs Adam on fresh instances of the
  training problems);
* ``tensorboard/``: the same scalars as TensorBoard events (``tensorboard --logdir DIR/tensorboard``), written with
  tensorboardX so TensorFlow is not needed;
* ``meta_training.png``: meta-loss and evaluation curves (matplotlib, Agg backend: no display needed).

A resumed run first drops the records past the step it resumes from (they were written after the checkpoint by the
interrupted process and are recomputed), so every step appears once in the logs. TensorBoard gets ``purge_step`` for
the same reason.
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

from meta_train.run import checkpoint

METRICS_FILE = 'metrics.jsonl'
EVALUATION_FILE = 'evaluation.jsonl'
PLOT_FILE = 'meta_training.png'


def _json_value(v):
  v = float(v)
  return v if math.isfinite(v) else str(v)  # JSON has no NaN/inf; keep them readable instead of invalid


def read_jsonl(path: str) -> list[dict]:
  """The records of a ``.jsonl`` file; a last line cut off by a crash is ignored."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return records


def _truncate_after(path: str, step: int) -> None:
  """Rewrites ``path`` keeping only records with ``record['step'] <= step`` (atomically)."""
  if not os.path.exists(path):
    return
  kept = [r for r in read_jsonl(path) if r.get('step', 0) <= step]
  text = ''.join(json.dumps(r) + '\n' for r in kept).encode('utf-8')
  checkpoint.atomic_write_bytes(path, lambda f: f.write(text))


class RunLogger:
  """Appends metrics to ``metrics.jsonl`` and TensorBoard, evaluation results to ``evaluation.jsonl``."""

  def __init__(self, out_dir: str, resume_step: int = 0, enabled: bool = True):
    """``resume_step``: the step the run continues from (records after it are dropped). ``enabled=False`` makes
    every method a no-op (processes other than 0 of a multi-process run)."""
    self.out_dir = out_dir
    self.enabled = enabled
    self._writer = None
    if not enabled:
      return
    self.metrics_path = os.path.join(out_dir, METRICS_FILE)
    self.evaluation_path = os.path.join(out_dir, EVALUATION_FILE)
    _truncate_after(self.metrics_path, resume_step)
    _truncate_after(self.evaluation_path, resume_step)
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    try:
      self._writer = SummaryWriter(os.path.join(out_dir, 'tensorboard'), purge_step=resume_step + 1,
                                   flush_secs=30)
    except OSError as e:
      raise checkpoint.CheckpointError(checkpoint.os_error_message(e, 'TensorBoard events')) from e

  def _append(self, path: str, record: dict) -> None:
    try:
      with open(path, 'a', encoding='utf-8') as f:
        f.write(json.dumps(record) + '\n')
    except OSError as e:
      raise checkpoint.CheckpointError(checkpoint.os_error_message(e, path)) from e

  def log(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: _json_value(v) for k, v in metrics.items()}}
    self._append(self.metrics_path, record)
    for k, v in metrics.items():
      if k != 'unix_time':  # TensorBoard records wall time itself (and float32 cannot hold a timestamp)
        self._writer.add_scalar(f'train/{k}', float(v), step)

  def log_evaluation(self, step: int, results: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: _json_value(v) for k, v in results.items()}}
    self._append(self.evaluation_path, record)
    for k, v in results.items():
      self._writer.add_scalar(f'eval/{k}', float(v), step)

  def plot(self) -> None:
    """Writes ``meta_training.png`` from the records on disk (atomically)."""
    if not self.enabled:
      return
    plot_curves(self.out_dir, os.path.join(self.out_dir, PLOT_FILE))

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def plot_curves(out_dir: str, png_path: str) -> None:
  """Plots meta-loss (and, if present, the evaluation against Adam) versus meta-step into ``png_path``."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  metrics = read_jsonl(os.path.join(out_dir, METRICS_FILE))
  evaluation = read_jsonl(os.path.join(out_dir, EVALUATION_FILE))
  panels = 2 if evaluation else 1
  fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
  ax = axes[0, 0]
  steps = [r['step'] for r in metrics]
  ax.plot(steps, [_as_float(r.get('meta_loss')) for r in metrics], label='meta-loss')
  ax.set_xlabel('meta-step')
  ax.set_ylabel('meta-loss (mean over the log window)')
  ax.set_title('meta-training')
  ax.grid(alpha=0.3)
  if evaluation:
    ax = axes[0, 1]
    steps = [r['step'] for r in evaluation]
    for key, label in (('lopt_final_train_loss', 'learned optimizer'), ('adam_final_train_loss', 'Adam')):
      ax.plot(steps, [_as_float(r.get(key)) for r in evaluation], marker='o', label=label)
    ax.set_yscale('log')
    ax.set_xlabel('meta-step')
    ax.set_ylabel('final training loss, fresh instances')
    ax.set_title('evaluation')
    ax.legend()
    ax.grid(alpha=0.3)
  fig.tight_layout()

  def write(f):
    fig.savefig(f, format='png', dpi=100)

  try:
    checkpoint.atomic_write_bytes(png_path, write)
  finally:
    plt.close(fig)


def _as_float(v) -> float:
  try:
    return float(v)
  except (TypeError, ValueError):
    return math.nan
