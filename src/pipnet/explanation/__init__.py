"""Explanation: why the model decided, for people.

:mod:`~pipnet.explanation.explain` (per-image and per-class explanations), :mod:`~pipnet.explanation.render`
(PNG figures and the HTML report) and :mod:`~pipnet.explanation.report` (a run's report, from
``templates/``). Uses training's vocabulary (phases, diagnostics, the edit log) and everything below it.
"""
