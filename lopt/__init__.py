"""Learned optimizers as optax transformations.

Quick use::

    import lopt, optax
    opt = lopt.hierarchical_rnn()            # shipped meta-trained weights when available
    state = opt.init(params)
    updates, state = opt.update(grads, state, params, value=loss)
    params = optax.apply_updates(params, updates)

See :mod:`lopt.base` for the contract every architecture follows.
"""

from lopt.architectures import BUILTIN_ARCHITECTURES, get_architecture
from lopt.base import LearnedOptimizer, check_inputs
from lopt.coordinatewise_lstm import CoordinatewiseLSTM
from lopt.hierarchical_rnn import HierarchicalRNN
from lopt.learnable_adam import LearnableAdam
from lopt.learnable_sgdm import LearnableSGDM
from lopt.mlp_lopt import MLPLOpt
from lopt.pretrained import hierarchical_rnn, load_pretrained, mlp_lopt
from lopt.rnn_mlp_lopt import RNNMLPLOpt
from lopt.serialization import LoptFileError, load, save

__all__ = [
    'BUILTIN_ARCHITECTURES', 'CoordinatewiseLSTM', 'HierarchicalRNN', 'LearnableAdam', 'LearnableSGDM',
    'LearnedOptimizer', 'LoptFileError', 'MLPLOpt', 'RNNMLPLOpt', 'check_inputs', 'get_architecture',
    'hierarchical_rnn', 'load', 'load_pretrained', 'mlp_lopt', 'save',
]
