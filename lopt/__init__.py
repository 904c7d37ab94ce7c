"""Learned optimizers as optax transformations.

Quick use::

    import lopt, optax
    opt = lopt.hierarchical_rnn()            # shipped meta-trained weights when available
    state = opt.init(params)
    updates, state = opt.update(grads, state, params, value=loss)
    params = optax.apply_updates(params, updates)

``lopt.hierarchical_rnn`` and ``lopt.mlp_lopt`` are the ready-to-use factories (:mod:`lopt.pretrained`); the
architectures live one per module in :mod:`lopt.architectures` (``lopt.architectures.hierarchical_rnn`` defines
``lopt.HierarchicalRNN``). See :mod:`lopt.base` for the contract every architecture follows. ``lopt.loss_brake``
(:mod:`lopt.brakes`) wraps any optimizer so that its steps shrink while the loss is above its best level.
"""

from lopt.architectures import BUILTIN_ARCHITECTURES, get_architecture
from lopt.architectures.coordinatewise_lstm import CoordinatewiseLSTM
from lopt.architectures.hierarchical_rnn import HierarchicalRNN
from lopt.architectures.learnable_adam import LearnableAdam
from lopt.architectures.learnable_sgdm import LearnableSGDM
from lopt.architectures.mlp_lopt import MLPLOpt
from lopt.architectures.rnn_mlp_lopt import RNNMLPLOpt
from lopt.base import LearnedOptimizer, check_inputs
from lopt.brakes import loss_brake
from lopt.pretrained import hierarchical_rnn, load_pretrained, mlp_lopt
from lopt.serialization import LoptFileError, load, save

__all__ = sorted([
    'BUILTIN_ARCHITECTURES', 'LearnedOptimizer', 'LoptFileError', 'check_inputs', 'get_architecture',
    'hierarchical_rnn', 'load', 'load_pretrained', 'loss_brake', 'mlp_lopt', 'save',
    # Every architecture class, exported by its own name (the import lines above; tests/lopt/test_contract.py checks).
    *(cls.__name__ for cls in BUILTIN_ARCHITECTURES.values()),
])
