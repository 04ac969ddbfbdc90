"""The model's input contract (pipnet.evaluation.inference): image size and preset recorded in config.json, one owner."""

from __future__ import annotations

import logging

import torch
from PIL import Image

from pipnet.core.data_config import DataConfig
from pipnet.evaluation.inference import fit_data_to_model, input_transform
from pipnet.model import PIPNet, create_model


def _colour_image() -> Image.Image:
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    image.paste((10, 10, 220), (0, 0, 20, 30))
    return image


def test_the_recorded_preset_and_size_shape_the_inputs(tmp_path):
    gray = create_model("resnet18", 2, image_size=32, preset="grayscale")
    gray.save_pretrained(tmp_path)
    reloaded = PIPNet.from_pretrained(tmp_path)
    assert (reloaded.config.image_size, reloaded.config.preset) == (32, "grayscale")
    x = input_transform(reloaded)(_colour_image())
    assert x.shape == (3, 32, 32)
    # Gray: the three channels carry one value per pixel (before the per-channel normalisation).
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = x * std[:, None, None] + mean[:, None, None]
    assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(pixels[1], pixels[2], atol=1e-5)
    colour = input_transform(create_model("resnet18", 2, image_size=32, preset="default"))(_colour_image())
    colour_pixels = colour * std[:, None, None] + mean[:, None, None]
    assert not torch.allclose(colour_pixels[0], colour_pixels[2], atol=1e-2)


def test_a_model_without_a_preset_takes_colour_inputs():
    plain = create_model("resnet18", 2, image_size=32)  # preset None: the default colour handling
    x = input_transform(plain)(_colour_image())
    assert not torch.allclose(x[0] * 0.229 + 0.485, x[2] * 0.225 + 0.406, atol=1e-2)


def test_data_of_another_size_is_fitted_to_the_model_with_a_warning(caplog):
    model = create_model("resnet18", 2, image_size=32, preset="grayscale")
    with caplog.at_level(logging.WARNING, logger="pipnet.evaluation.inference"):
        fitted = fit_data_to_model(DataConfig(image_size=224), model)
    assert (fitted.image_size, fitted.preset) == (32, "grayscale")
    assert "image size is 224, the model's 32" in caplog.text and "preset is default" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipnet.evaluation.inference"):
        same = fit_data_to_model(DataConfig(image_size=32, preset="grayscale"), model)
    assert same.image_size == 32 and not caplog.text
