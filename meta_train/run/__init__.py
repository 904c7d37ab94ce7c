"""A meta-training *run*: everything around the engine of :mod:`meta_train` that turns a TOML config into a trained
optimizer on disk.

* :mod:`meta_train.run.config`: the validated config (``python -m meta_train CONFIG`` reads it);
* :mod:`meta_train.run.build`: from a config to the components (architecture, task families, estimator,
  meta-optimizer, periodic evaluation); the name tables of the built-in components live there;
* :mod:`meta_train.run.trainer`: the outer loop (meta-steps, host-sampled branches, checkpoints, logging);
* :mod:`meta_train.run.checkpoint`, :mod:`meta_train.run.resume_state`: full checkpoints and the compact
  ``resume.npz``;
* :mod:`meta_train.run.logging`: ``metrics.jsonl``, TensorBoard events, ``meta_training.png``;
* :mod:`meta_train.run.sharding`: the ensemble axis over devices and processes;
* :mod:`meta_train.run.cli` (``python -m meta_train``, ``lopt-meta-train``) and :mod:`meta_train.run.export`
  (``python -m meta_train.run.export RUN_DIR OUT.npz``).

Nothing is imported here, so ``import meta_train.run.config`` does not pull in the trainer.
"""
