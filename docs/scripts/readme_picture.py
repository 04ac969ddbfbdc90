"""Draw ``docs/demo-explained.png``, the README's picture, from a finished ``pipnet demo`` run.

One held-out test image explained as the paper's Figure 3 does: the predicted class and its score, and for
each contributing prototype its box on the image, presence p, weight w, evidence p·w and its most typical
training patches (the prototype's top patches). Drawn with the project's own renderers
(``pipnet.explanation.render.png``), so the picture is what ``pipnet explain`` and the report show.

    pipnet demo --out runs/demo --no-progress
    python docs/scripts/readme_picture.py runs/demo docs/demo-explained.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from pipnet.data import build_data
from pipnet.explanation.explain import explain
from pipnet.model import PIPNet
from pipnet.evaluation.projection import project
from pipnet.explanation.render.png import explanation_figure
from pipnet.model.run_folder import RunFolder


def main(run_dir: str, out: str) -> None:
    folder = RunFolder(run_dir)
    model = PIPNet.from_pretrained(folder.path).eval()
    data = build_data(folder.training_config().data)
    projection = project(model, data.projection, k=10, batch_size=32)
    # the first test image that is predicted correctly from at least two prototypes: a typical explanation
    for index in range(len(data.test)):
        x, label = data.test[index]
        with torch.inference_mode():
            (e,) = explain(model, x[None], top_classes=1, image_ids=[f"test #{index}"])
        if not e.abstained and e.predicted == label and len(e.top_classes[0].evidence) >= 2:
            break
    figure = explanation_figure(e, data.test.raw_image(index), projection, data.projection, max_prototypes=2, k=6,
                                image_px=150, patch_px=48)
    figure.save(out, optimize=True)
    print(f"{out}: test image {index}, {figure.width}x{figure.height}, {Path(out).stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main(*sys.argv[1:3])
