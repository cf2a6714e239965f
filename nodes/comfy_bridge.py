"""The few ComfyUI services the nodes use, imported lazily so the pack also imports (and is tested) without ComfyUI."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def _module(name: str):
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


def user_store() -> Path | None:
    """ComfyUI's place for the preference store, ``<user dir>/edpbrl/preferences.db`` (None without ComfyUI).

    The pack hands it to the engine once at import (``registry.use_host_store``); the engine's one rule
    (explicit path, then ``$EDPBRL_STORE``, then this) decides for every node and route.
    """
    folder_paths = _module("folder_paths")
    return Path(folder_paths.get_user_directory()) / "edpbrl" / "preferences.db" if folder_paths else None


def model_files(kind: str) -> list[str]:
    folder_paths = _module("folder_paths")
    if folder_paths is None:
        return []
    try:
        return list(folder_paths.get_filename_list(kind))
    except Exception:  # an unknown folder kind in this ComfyUI version
        return []


def diffusers_folders() -> list[str]:
    folder_paths = _module("folder_paths")
    if folder_paths is None:
        return []
    found = []
    for root in (
        folder_paths.get_folder_paths("diffusers") if "diffusers" in folder_paths.folder_names_and_paths else []
    ):
        if os.path.isdir(root):
            found += [d for d in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, d, "model_index.json"))]
    return found


def resolve_model(kind: str, name: str) -> str:
    folder_paths = _module("folder_paths")
    if folder_paths is None:
        return name
    if kind == "diffusers":
        for root in folder_paths.get_folder_paths("diffusers"):
            if os.path.isdir(os.path.join(root, name)):
                return os.path.join(root, name)
        raise ValueError(f"diffusers folder {name!r} not found in ComfyUI's models/diffusers")
    path = folder_paths.get_full_path(kind, name)
    if path is None:
        raise ValueError(f"{kind} file {name!r} not found in ComfyUI's model folders")
    return path


def loras_dir() -> Path:
    """ComfyUI's first ``loras`` folder (where the stock LoraLoader looks)."""
    folder_paths = _module("folder_paths")
    if folder_paths is None:
        return Path(os.environ.get("EDPBRL_LORA_DIR", Path.home() / ".edpbrl" / "loras"))
    return Path(folder_paths.get_folder_paths("loras")[0])


def save_preview(images: np.ndarray, prefix: str) -> list[dict]:
    """Write images to ComfyUI's temp folder like PreviewImage; returns {filename, subfolder, type} per image."""
    folder_paths = _module("folder_paths")
    root = (
        Path(folder_paths.get_temp_directory()) if folder_paths else Path(os.environ.get("TMPDIR", "/tmp")) / "edpbrl"
    )
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i, image in enumerate(np.asarray(images)):
        name = f"{prefix}_{i}.png"
        Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / name)
        out.append({"filename": name, "subfolder": "", "type": "temp"})
    return out


def send(event: str, data: dict) -> None:
    """Message the browser(s) (safe from ComfyUI's worker thread); a no-op without ComfyUI."""
    server = _module("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is not None:
        instance.send_sync(event, data, getattr(instance, "client_id", None))


def check_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel."""
    model_management = _module("comfy.model_management")
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()


def progress(total: int, node_id: str | None = None):
    """A ``(step, total)`` callback driving ComfyUI's progress bar (None without ComfyUI)."""
    utils = _module("comfy.utils")
    if utils is None:
        return None
    bar = utils.ProgressBar(total, node_id=node_id)
    return lambda step, steps: bar.update_absolute(step, steps)
