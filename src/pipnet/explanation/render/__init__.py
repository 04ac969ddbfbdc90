"""Renderers: turn explanations, projections and training histories into pictures and an HTML report.

Nothing here computes an explanation; it draws what `pipnet.explanation.explain` and `pipnet.evaluation.projection` return.
"""

from pipnet.explanation.render.html import render_report, write_report
from pipnet.explanation.render.png import (
    draw_boxes,
    explanation_figure,
    heatmap_overlay,
    prototype_gallery,
    prototype_patches,
    scoring_sheet_figure,
    sparsity_curve,
)

__all__ = [
    "draw_boxes",
    "explanation_figure",
    "heatmap_overlay",
    "prototype_gallery",
    "prototype_patches",
    "render_report",
    "scoring_sheet_figure",
    "sparsity_curve",
    "write_report",
]
