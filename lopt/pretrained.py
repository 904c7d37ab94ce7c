"""Meta-trained weights shipped inside the package, and the ready-to-use factories built on them.

Shipped weights live in ``lopt/weights/<architecture name>.npz`` in the :func:`lopt.save` format, so they load
without network access. Each has a model card in ``docs/`` giving its meta-training config, seed, compute and
evaluation.
"""

from __future__ import annotations

import pathlib
import warnings

import jax
import optax

from lopt import base, serialization
from lopt.architectures.hierarchical_rnn import HierarchicalRNN
from lopt.architectures.mlp_lopt import MLPLOpt

WEIGHTS_DIR = pathlib.Path(__file__).parent / 'weights'


def pretrained_path(name: str) -> pathlib.Path | None:
  """The shipped weights file of architecture ``name``, or None if the package ships none."""
  path = WEIGHTS_DIR / f'{name}.npz'
  return path if path.is_file() else None


def load_pretrained(name: str) -> tuple[base.LearnedOptimizer, base.MetaParams]:
  """Loads the shipped ``(architecture, meta_params)`` of architecture ``name``; raises if none is shipped."""
  path = pretrained_path(name)
  if path is None:
    shipped = sorted(p.stem for p in WEIGHTS_DIR.glob('*.npz'))
    raise serialization.LoptFileNotFoundError(
        f'no meta-trained weights are shipped for {name!r} (looked for {WEIGHTS_DIR / (name + ".npz")}); '
        f'shipped: {shipped or "none"}.')
  return serialization.load(path)


def _default_meta_params(architecture: base.LearnedOptimizer, config_given: bool) -> tuple[
    base.LearnedOptimizer, base.MetaParams]:
  """Shipped weights when they fit ``architecture``, else its initial weights (with a warning if weights exist)."""
  path = pretrained_path(architecture.name)
  if path is None:
    return architecture, architecture.init(jax.random.PRNGKey(0))
  shipped_architecture, meta_params = serialization.load(path)
  if not config_given or shipped_architecture == architecture:
    return shipped_architecture, meta_params
  warnings.warn(
      f'the shipped {architecture.name} weights were meta-trained with config {shipped_architecture.config()}, '
      f'which differs from the requested {architecture.config()}: using untrained initial weights instead. '
      'Pass meta_params= to use your own.', stacklevel=3)
  return architecture, architecture.init(jax.random.PRNGKey(0))


def hierarchical_rnn(meta_params: base.MetaParams | None = None, **config) -> optax.GradientTransformationExtraArgs:
  """The hierarchical RNN optimizer of Wichrowska et al. (2017), ready to use like ``optax.adam``.

  Args:
    meta_params: the learned optimizer's weights. None (the default) uses the meta-trained weights shipped in the
      package when they exist and fit ``config``; otherwise the architecture's initial weights (seed 0).
    **config: hyperparameters of :class:`lopt.HierarchicalRNN`. With none given and weights shipped, the shipped
      architecture's config is used.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update(grads, state, params)`` needs ``params``.

  Example::

    opt = lopt.hierarchical_rnn()
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  """
  architecture = HierarchicalRNN(**config)
  if meta_params is None:
    architecture, meta_params = _default_meta_params(architecture, config_given=bool(config))
  return architecture.transform(meta_params)


def mlp_lopt(meta_params: base.MetaParams | None = None, **config) -> optax.GradientTransformationExtraArgs:
  """The per-parameter MLP optimizer of Metz et al. (2019), ready to use like ``optax.adam``.

  Same rules as :func:`hierarchical_rnn`: with no ``meta_params`` it uses the weights shipped in the package
  (meta-trained on a validation objective, ``docs/model_card_mlp_lopt.md``) when they fit ``config``.
  """
  architecture = MLPLOpt(**config)
  if meta_params is None:
    architecture, meta_params = _default_meta_params(architecture, config_given=bool(config))
  return architecture.transform(meta_params)
