"""Saving and loading a PIP-Net: `model.safetensors` + `config.json` (the release format), checked on load.

`Pretrained` gives the model class `save_pretrained` and `from_pretrained`; loading refuses, with a
[`ModelLoadError`][pipnet.ModelLoadError] that names what is wrong, a missing file, a config key it does not know or of the
wrong type, and weights that do not fit the architecture.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from pipnet.core.normalization import Normalization
from pipnet.model.backbones import GRIDS
from pipnet.model.config import PIPNetConfig

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "ModelLoadError", "Pretrained", "load_state_dict_checked"]

T = TypeVar("T", bound="Pretrained")
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"  # a saved model (save_pretrained)


class ModelLoadError(ValueError):
    """A saved model cannot be loaded (missing files, wrong architecture, corrupt weights)."""


class Pretrained:
    """`save_pretrained` / `from_pretrained` for a module built from a [`PIPNetConfig`][pipnet.PIPNetConfig] (`self.config`)."""

    config: PIPNetConfig

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `model.safetensors` + `config.json` to `directory` (created if needed); returns it.

        Examples:
            >>> import pipnet
            >>> model = pipnet.create_model("resnet18", num_classes=2, num_features=4, class_names=["cat", "dog"])
            >>> folder = model.save_pretrained("my-model")
            >>> sorted(p.name for p in folder.iterdir())
            ['config.json', 'model.safetensors']
        """
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        from pipnet.core.utils import atomic_write

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        try:
            with atomic_write(directory / WEIGHTS_FILE) as tmp:
                save_file(state, str(tmp), metadata={"format": "pt", "library": "pipnet"})
        except SafetensorError as e:  # a full disk, say; the previous file, if any, is intact
            raise OSError(f"could not write {directory / WEIGHTS_FILE}: {e}") from e
        with atomic_write(directory / CONFIG_FILE) as tmp:
            tmp.write_text(json.dumps(asdict(self.config), indent=2))
        return directory

    @classmethod
    def from_pretrained(cls: type[T], directory: str | Path, map_location: str | torch.device = "cpu") -> T:
        """Load a model written by [`save_pretrained`][pipnet.PIPNet.save_pretrained].

        Args:
            directory: the model folder (`model.safetensors` + `config.json`; a run folder holds one).
            map_location: where to load the weights.

        Raises:
            ModelLoadError: a file is missing, the config has an unknown or mistyped key, or the weights
                do not fit the architecture.

        Examples:
            >>> import torch
            >>> import pipnet
            >>> model = pipnet.create_model("resnet18", num_classes=2, num_features=4, class_names=["cat", "dog"])
            >>> _ = model.save_pretrained("my-model")
            >>> loaded = pipnet.PIPNet.from_pretrained("my-model").eval()  # loaded in training mode, like any module
            >>> loaded.config.class_names
            ['cat', 'dog']
            >>> x = torch.rand(1, 3, 64, 64)
            >>> torch.equal(loaded.predict(x).scores, model.eval().predict(x).scores)
            True
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for p in (config_path, weights_path):
            if not p.is_file():
                raise ModelLoadError(f"{directory} is not a saved PIP-Net: {p.name} is missing")
        try:
            raw = json.loads(config_path.read_text())
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{config_path} is not valid JSON: {e}") from e
        model = cls(_checked_config(raw, config_path))
        try:
            state = load_file(str(weights_path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"{weights_path} is corrupt or truncated: {e}") from e
        load_state_dict_checked(model, state, source=str(weights_path))
        return model


def _checked_config(raw: Any, path: Path) -> PIPNetConfig:
    """A `PIPNetConfig` from a parsed config.json, or a `ModelLoadError` naming the key that is wrong."""
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path} is not a JSON object of PIPNetConfig fields")
    fields = PIPNetConfig.__dataclass_fields__
    unknown = set(raw) - set(fields)
    if unknown:
        raise ModelLoadError(f"{path} has unknown keys {sorted(unknown)}; known: {sorted(fields)}")
    defaults = asdict(PIPNetConfig())
    for key, value in raw.items():
        expected = type(defaults[key])
        if defaults[key] is not None and type(value) is not expected:
            raise ModelLoadError(f"{path}: {key} should be a {expected.__name__}, got {value!r}")
    for key in ("num_classes", "image_size"):
        if raw.get(key, 1) < 1:
            raise ModelLoadError(f"{path}: {key} should be at least 1, got {raw[key]}")
    if raw.get("num_features", 0) < 0:
        raise ModelLoadError(f"{path}: num_features should be 0 or more, got {raw['num_features']}")
    if raw.get("grid", "stride") not in GRIDS:
        raise ModelLoadError(f"{path}: grid should be one of {GRIDS}, got {raw['grid']!r}")
    if raw.get("normalization") is not None:
        try:
            Normalization.from_dict(raw["normalization"])
        except ValueError as e:
            raise ModelLoadError(f"{path}: {e}") from None
    return PIPNetConfig(**raw)


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with an error message that names what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"shape mismatches (e.g. {wrong[:3]})")
        raise ModelLoadError(f"{source} does not fit this model: " + "; ".join(parts))
    model.load_state_dict(state)
