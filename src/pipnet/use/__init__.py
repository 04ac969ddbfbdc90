"""Use: putting a trained model to work.

:mod:`~pipnet.use.predict` (labels, scores and reasons for image files), :mod:`~pipnet.use.export` (ONNX)
and :mod:`~pipnet.use.serve` (the local web explorer, an optional extra).
"""
