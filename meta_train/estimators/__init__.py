"""Gradient estimators of the meta-objective, one module each, composed with the unrolls they run.

* :mod:`~meta_train.estimators.base`: the :class:`GradientEstimator` contract (``init``, ``estimate``, host-sampled
  branches) the trainer relies on;
* :mod:`~meta_train.estimators.truncated`: :class:`TruncatedEstimator`, a per-group rule run over the structure
  groups of a :class:`meta_train.structure_groups.StructureGroups`;
* :mod:`~meta_train.estimators.perturbation`: Gaussian perturbations of the meta-parameters (antithetic twins) and
  :class:`PerturbedEstimator`, the base of ES, PES and the hybrid;
* :mod:`~meta_train.estimators.truncated_backprop` (``TruncatedBackprop``), :mod:`~meta_train.estimators.es`
  (``TruncatedES``), :mod:`~meta_train.estimators.pes` (``TruncatedPES``), :mod:`~meta_train.estimators.hybrid`
  (``HybridEstimator``).

An estimator takes the unrolls plus its own arguments::

    groups = meta_train.StructureGroups(architecture, families, num_tasks=8, unroll_length=20)
    estimator = meta_train.TruncatedPES(groups, std=0.01)

Adding one is a module here (a :class:`TruncatedEstimator` subclass with ``_init_group`` and ``_estimate_group``)
and one line in ``meta_train.run.build.ESTIMATORS``, which names the estimators of the configs. The submodules are
not imported here, so that :mod:`meta_train.structure_groups` can import the contract without a cycle.
"""
