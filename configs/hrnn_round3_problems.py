"""The meta-training problems of configs/hrnn_round3.toml (a ``tasks.family = "module:attr"`` hook).

The second round's 18 problems (15 of the Wichrowska 2017 set and three small ReLU networks) plus wider and deeper
networks on generated data only: a 784-128-128-10 and a 256-256-256-10 ReLU MLP, a tanh MLP and a ReLU autoencoder
on the images of :mod:`tasks.synthetic_images`. Nothing here uses the validation suite's data (patches of
scikit-learn's sample photographs, wine, diabetes) or the test suite's (Fashion-MNIST, digits, breast cancer).
"""

from tasks import autoencoder, base, datasets, image_classification as ic, problem_sets


def training_set() -> problem_sets.ProblemSet:
  images16 = datasets.load_synthetic_images()
  images28 = datasets.load_synthetic_images(size=28)
  wide = {
      'synthetic_images_28px_mlp_128x128_relu_bs64': ic.mlp_task(images28, (128, 128), 'relu', batch_size=64),
      'synthetic_images_mlp_256x256_relu_bs64': ic.mlp_task(images16, (256, 256), 'relu', batch_size=64),
      'synthetic_images_mlp_64_tanh_bs64': ic.mlp_task(images16, (64,), 'tanh', batch_size=64),
      'synthetic_images_autoencoder_64x16x64_relu_bs64': autoencoder.AutoencoderTask(images16, (64, 16, 64), 'relu', 64),
  }
  families = list(problem_sets.hrnn_training_set_v2().items())
  families += [(name, base.SingleTaskFamily(task)) for name, task in wide.items()]
  return problem_sets.ProblemSet('hrnn_round3', families)


def pes_pilot_set() -> problem_sets.ProblemSet:
  """A smaller set for the PES pilot of configs/hrnn_round3_pes_pilot.toml: two Wichrowska problems, the round's
  ReLU and tanh networks of at most ~70k parameters, and the autoencoder (PES needs more instances per problem, so
  fewer problems)."""
  full = training_set()
  names = ('quadratic_50_noise1', 'softmax_10_bs100_sep2', 'mlp_relu_64x64_nf32_bs64',
           'synthetic_images_mlp_32x32_relu_bs32', 'synthetic_images_mlp_64_tanh_bs64',
           'synthetic_images_autoencoder_64x16x64_relu_bs64')
  missing = [n for n in names if n not in full]
  if missing:
    raise KeyError(f'pes_pilot_set: {missing} are not in the round-3 training set ({", ".join(full)}).')
  return problem_sets.ProblemSet('hrnn_round3_pes_pilot', [(n, full[n]) for n in names])
