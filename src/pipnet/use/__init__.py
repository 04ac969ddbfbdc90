"""Use: putting a trained model to work.

`predict` (labels, scores and reasons for image files), `export` (ONNX)
and `serve` (the local web explorer, an optional extra).
"""
