"""Pipelines: whole jobs as library functions returning typed results.

The last stage before the command line (``docs/architecture.md``): each pipeline composes
the earlier stages (generator, model, evaluation, place database) and returns a dataclass;
``hotformerloc.cli`` only parses options and prints, and ``benchmarks/`` calls the same
functions.

* :mod:`hotformerloc.pipelines.evaluate`: score models (with query views, re-ranking) and
  Scan Context on a benchmark folder (``hotformerloc eval``);
* :mod:`hotformerloc.pipelines.demo`: the demo (``hotformerloc demo``, ``make demo``).

Training is :func:`hotformerloc.train.trainer.fit_local` (``hotformerloc train``).
Importing this package does not import torch.
"""
