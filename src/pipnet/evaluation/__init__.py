"""Evaluation: running a model over a data set and measuring it.

`inference` (device, eval mode, loaders), `projection`,
`metrics`, `evaluate` (the metrics of a run),
`thresholds` (out-of-distribution thresholds) and `quality`
(the prototype report card). Uses the model and data layers; training sits above it (it evaluates every epoch).
"""
