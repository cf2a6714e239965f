"""Where the shipped digits / fashion weights live, and loading them with clear errors (never a random model)."""

from __future__ import annotations

from pathlib import Path

import torch

from .classifier import DigitClassifier
from .data import CLASS_NAMES
from .pipeline import DigitsPipeline

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

_GENERATOR_FILES = [
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
]
_CLASSIFIER_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]


def generator_dir(dataset: str) -> Path:
    return WEIGHTS_DIR / dataset / "generator"


def classifier_dir(dataset: str) -> Path:
    return WEIGHTS_DIR / dataset / "classifier"


def form_dir(dataset: str) -> Path:
    return WEIGHTS_DIR / dataset / "form"


def _check_files(dataset: str, folder: Path, required: list[str], what: str) -> None:
    if dataset not in CLASS_NAMES:
        raise ValueError(f"unknown embedded model {dataset!r}; choose one of {sorted(CLASS_NAMES)}")
    for name in required:
        path = folder / name
        if not path.is_file() or path.stat().st_size == 0:
            raise FileNotFoundError(
                f"embedded weight file {path} is missing or empty; reinstall edpbrl or retrain it with "
                f"`python -m edpbrl_plugin.models.digits.train {what} --dataset {dataset}`"
            )


def check_shipped(dataset: str) -> None:
    """Raise (``FileNotFoundError`` saying how to get them) unless ``dataset``'s generator, classifier and form
    judge are here."""
    _check_files(dataset, generator_dir(dataset), _GENERATOR_FILES, "generator")
    _check_files(dataset, classifier_dir(dataset), _CLASSIFIER_FILES, "classifier")
    _check_files(dataset, form_dir(dataset), _CLASSIFIER_FILES, "form")


def _load(dataset: str, folder: Path, required: list[str], loader, what: str):
    _check_files(dataset, folder, required, what)
    try:
        return loader(folder)
    except Exception as error:  # safetensors / json errors: name the folder, never fall back to random weights
        raise RuntimeError(
            f"could not load the embedded weights in {folder} ({type(error).__name__}: {error}); the files may be "
            f"corrupt: reinstall edpbrl or retrain with `python -m edpbrl_plugin.models.digits.train {what}`"
        ) from error


def load_pipeline(dataset: str = "digits", dtype: torch.dtype = torch.float32) -> DigitsPipeline:
    """The shipped unconditional 28x28 pipeline of ``dataset`` ("digits" or "fashion"; stored in fp16)."""
    pipe = _load(
        dataset,
        generator_dir(dataset),
        _GENERATOR_FILES,
        lambda f: DigitsPipeline.from_pretrained(f, dtype=dtype),
        "generator",
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_classifier(dataset: str = "digits") -> DigitClassifier:
    """The shipped classifier of ``dataset``, in eval mode."""
    return _load(
        dataset, classifier_dir(dataset), _CLASSIFIER_FILES, DigitClassifier.from_pretrained, "classifier"
    ).eval()


def load_form(dataset: str = "digits") -> DigitClassifier:
    """The shipped form judge of ``dataset`` (a two-class :class:`DigitClassifier`: 1 = well formed), in eval mode."""
    return _load(dataset, form_dir(dataset), _CLASSIFIER_FILES, DigitClassifier.from_pretrained, "form").eval()
