"""Where the shipped embedded weights live, and loading them with clear errors (never a random model)."""

from __future__ import annotations

from pathlib import Path

import torch

from .encoder import AttributeEncoder
from .pipeline import ShapesPipeline

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
GENERATOR_DIR = WEIGHTS_DIR / "generator"
ENCODER_DIR = WEIGHTS_DIR / "encoder"

_GENERATOR_FILES = [
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
]
_ENCODER_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]


def _check_files(folder: Path, required: list[str]) -> None:
    for name in required:
        path = folder / name
        if not path.is_file() or path.stat().st_size == 0:
            raise FileNotFoundError(
                f"embedded weight file {path} is missing or empty; reinstall edpbrl or retrain it with "
                "`python -m edpbrl_plugin.models.shapes.train`"
            )


def _load(folder: Path, required: list[str], loader):
    folder = Path(folder)
    _check_files(folder, required)
    try:
        return loader(folder)
    except Exception as error:  # safetensors / json errors: name the folder, never fall back to random weights
        raise RuntimeError(
            f"could not load the embedded weights in {folder} ({type(error).__name__}: {error}); the files may be "
            "corrupt: reinstall edpbrl or retrain with `python -m edpbrl_plugin.models.shapes.train`"
        ) from error


def load_pipeline(folder: str | Path = GENERATOR_DIR, dtype: torch.dtype = torch.float32) -> ShapesPipeline:
    """The shipped text-to-image pipeline (stored in fp16, computed in ``dtype``)."""
    pipe = _load(Path(folder), _GENERATOR_FILES, lambda f: ShapesPipeline.from_pretrained(f, dtype=dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_attribute_encoder(folder: str | Path = ENCODER_DIR) -> AttributeEncoder:
    """The shipped attribute CNN, in eval mode."""
    return _load(Path(folder), _ENCODER_FILES, AttributeEncoder.from_pretrained).eval()
