"""Explanation: why the model decided, for people.

`explain` (per-image and per-class explanations), `render`
(PNG figures and the HTML report) and `report` (a run's report, from
`templates/`). Uses training's vocabulary (phases, diagnostics, the edit log) and everything below it.
"""
