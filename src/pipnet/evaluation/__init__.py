"""Evaluation: running a model over a data set and measuring it.

:mod:`~pipnet.evaluation.inference` (device, eval mode, loaders), :mod:`~pipnet.evaluation.projection`,
:mod:`~pipnet.evaluation.metrics`, :mod:`~pipnet.evaluation.evaluate` (the metrics of a run),
:mod:`~pipnet.evaluation.thresholds` (out-of-distribution thresholds) and :mod:`~pipnet.evaluation.quality`
(the prototype report card). Uses the model and data layers; training sits above it (it evaluates every epoch).
"""
