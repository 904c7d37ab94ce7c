"""An independent float64 numpy implementation of the hierarchical RNN optimizer (docs/algorithms.md §2), for tests
only.

Written from the equations of docs/algorithms.md §2.3-§2.6 step by step, in the released code's structure rather than
the library's: a Python loop over tensors, parameters batch-major (``[n, features]``), the first step detected as the
released code does ("the mean squares are all zeros") instead of by a step counter, and no flattening or concatenation
across tensors. It shares with the library only the meta-parameter dict layout (flax.linen.GRUCell's, see lopt/gru.py)
so that both can be run on the same weights.
"""

from __future__ import annotations

import numpy as np

MAX_LOG_LR = 33.0


def _sigmoid(v):
  return 1.0 / (1.0 + np.exp(-v))


def gru(p, x, h, beta=None):
  """flax.linen.GRUCell's equations with an additive bias [beta_r, beta_z, beta_n] on the pre-activations."""
  hidden = h.shape[-1]
  if beta is None:
    beta = np.zeros(3 * hidden)
  beta_r, beta_z, beta_n = beta[:hidden], beta[hidden:2 * hidden], beta[2 * hidden:]
  r = _sigmoid(x @ p['ir']['kernel'] + p['ir']['bias'] + h @ p['hr']['kernel'] + beta_r)
  z = _sigmoid(x @ p['iz']['kernel'] + p['iz']['bias'] + h @ p['hz']['kernel'] + beta_z)
  n = np.tanh(x @ p['in']['kernel'] + p['in']['bias'] + r * (h @ p['hn']['kernel'] + p['hn']['bias']) + beta_n)
  return (1 - z) * n + z * h


def to_numpy(tree):
  if isinstance(tree, dict):
    return {k: to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree, np.float64)


def init_state(meta, params, log_lrs, use_attention=False):
  """Per-tensor state dicts plus the tensor and global GRU states. ``log_lrs``: per-tensor initial log lr."""
  h0 = meta['param_hidden_init'].shape[0]
  scales = meta['gradient_shortcut'].shape[0]
  tensors = []
  for p, log_lr in zip(params, log_lrs):
    n = p.size
    tensors.append({
        'h': np.tile(meta['param_hidden_init'], (n, 1)),
        'inp_decay': np.zeros(n), 'scl_decay': np.zeros(n), 'log_lr': np.asarray(log_lr, np.float64).reshape(n),
        'grad_accum': np.zeros((n, scales)), 'ms': np.zeros((n, scales)),
        'true_param': np.asarray(p, np.float64).reshape(n).copy() if use_attention else None,
        'layer': meta['tensor_hidden_init'].copy(),
    })
  return {'tensors': tensors, 'global': meta['global_hidden_init'].copy()}


def features(tensor_state, grad, all_log_lr_mean, use_grad_products=True, use_relative_log_ms=True,
             use_relative_lr=True):
  """docs/algorithms.md §2.3, steps 1-4, for one tensor.

  Returns (new grad_accum, new ms, x, extra features, full input [n, F]).
  """
  g = np.asarray(grad, np.float64).reshape(-1)
  scales = tensor_state['grad_accum'].shape[1]
  decays = [tensor_state['inp_decay']]
  for _ in range(scales - 1):
    decays.append(np.sqrt(decays[-1]))
  d = np.stack(decays, axis=1)
  accum = (1 - d) * g[:, None] + d * tensor_state['grad_accum']
  ms_old = tensor_state['ms']
  s = 0.0 if np.all(ms_old == 0) else tensor_state['scl_decay'][:, None]
  ms = (1 - s) * (accum ** 2 + 1e-12) + s * ms_old
  x = np.arcsinh(accum / np.sqrt(ms + 1e-16))
  extra = {}
  parts = [x]
  if use_grad_products:
    extra['products'] = np.stack([x[:, i] * x[:, i + 1] for i in range(scales - 1)], axis=1).reshape(len(g), -1)
    parts.append(extra['products'])
  if use_relative_log_ms:
    log_ms = np.log(ms + 1e-16)
    extra['relative_log_ms'] = log_ms - log_ms.mean(axis=1, keepdims=True)
    parts.append(extra['relative_log_ms'])
  if use_relative_lr:
    extra['relative_lr'] = (tensor_state['log_lr'] - all_log_lr_mean)[:, None]
    parts.append(extra['relative_lr'])
  return accum, ms, x, extra, np.concatenate(parts, axis=1)


def _mean0(v):
  return v.mean(axis=0) if v.shape[0] else np.zeros(v.shape[1:])


def step(meta, state, grads, params, use_attention=False, global_input='mean', **feature_switches):
  """One optimizer step; returns (updates per tensor, new state, per-tensor feature dicts)."""
  all_log_lr = np.concatenate([t['log_lr'] for t in state['tensors']])
  log_lr_mean = all_log_lr.mean() if all_log_lr.size else 0.0
  global_prev = state['global']
  updates, new_tensors, feats = [], [], []
  for ts, g, p in zip(state['tensors'], grads, params):
    accum, ms, x, extra, inp = features(ts, g, log_lr_mean, **feature_switches)
    feats.append({'grad_accum': accum, 'ms': ms, 'x': x, 'input': inp, **extra})
    layer_prev = ts['layer']
    bias0 = (layer_prev @ meta['param_bias_from_tensor']['kernel'] + meta['param_bias_from_tensor']['bias']
             + global_prev @ meta['param_bias_from_global']['kernel'] + meta['param_bias_from_global']['bias'])
    h = gru(meta['param_rnn'], inp, ts['h'], bias0)
    tensor_in = _mean0(np.concatenate([h, inp], axis=1))
    bias1 = global_prev @ meta['tensor_bias_from_global']['kernel'] + meta['tensor_bias_from_global']['bias']
    layer = gru(meta['tensor_rnn'], tensor_in, layer_prev, bias1)

    def direction(readout, shortcut):
      delta = h @ readout + x @ shortcut
      return delta / np.sqrt(_mean0(delta ** 2) + 1e-16)

    delta = direction(meta['direction'], meta['gradient_shortcut'])
    scl_decay = _sigmoid(h @ meta['rms_decay']['kernel'] + meta['rms_decay']['bias'])
    inp_decay = _sigmoid(h @ meta['input_decay']['kernel'] + meta['input_decay']['bias'])
    log_lr_step = np.clip(ts['log_lr'] + h @ meta['log_lr']['kernel'] + meta['log_lr']['bias'], -MAX_LOG_LR,
                          MAX_LOG_LR)
    m = _sigmoid(meta['lr_momentum_logit'])
    new_log_lr = m * ts['log_lr'] + (1 - m) * log_lr_step
    step_taken = -np.exp(log_lr_step + meta['step_size_offset']) * delta
    true_param = ts['true_param']
    if use_attention:
      delta_att = direction(meta['attention_direction'], meta['attention_shortcut'])
      attended = true_param - np.exp(log_lr_step) * delta_att
      update = attended - np.asarray(p, np.float64).reshape(-1)
      true_param = true_param + step_taken
    else:
      update = step_taken
    updates.append(update.reshape(np.shape(p)))
    new_tensors.append({'h': h, 'inp_decay': inp_decay, 'scl_decay': scl_decay, 'log_lr': new_log_lr,
                        'grad_accum': accum, 'ms': ms, 'true_param': true_param, 'layer': layer})
  layers = np.stack([t['layer'] for t in new_tensors])
  if global_input == 'mean':
    global_in = layers.mean(axis=0)
  else:  # the released code's quirk: the loop variable after the per-tensor loop, i.e. the last tensor
    global_in = layers[-1]
  new_global = gru(meta['global_rnn'], global_in, global_prev)
  return updates, {'tensors': new_tensors, 'global': new_global}, feats
