"""Base-model sample pools, cached in memory and on disk.

A pool (the distillation's base samples) is a property of the base weights, the prompts and the sampler
settings, never of a session: every session, round and benchmark run over the same base and prompts reuses
it, so only the first update on a machine pays for sampling it (1,024 images: about 3 minutes on two CPU cores
for the embedded model, which ships its default pool; 32 images, minutes, for Stable Diffusion).

The disk cache lives in ``$EDPBRL_CACHE`` (default ``~/.cache/edpbrl``), one safetensors file per pool,
named by the hash of its key; a file that cannot be read is sampled again and rewritten. A pipeline folder
may ship pools beside its weights (``<folder>/pools/<key>.safetensors``, read-only): the embedded model ships
the pool of its default settings (``scripts/ship_base_pool.py``), so a fresh install does not sample it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

_MEMORY: dict[str, np.ndarray] = {}


def cache_dir() -> Path:
    """Where pools are kept: ``$EDPBRL_CACHE`` or ``~/.cache/edpbrl``."""
    return Path(os.environ.get("EDPBRL_CACHE") or Path.home() / ".cache" / "edpbrl")


def weights_digest(module: torch.nn.Module) -> str:
    """A hash of a module's base weights (LoRA parameters excluded): names, shapes and the first 1,024 values
    of every tensor, enough to tell two checkpoints apart without hashing gigabytes."""
    digest = hashlib.sha256()
    for name, param in module.named_parameters():
        if "lora_" in name:
            continue
        head = param.detach().reshape(-1)[:1024].float().cpu().numpy()
        digest.update(f"{name.replace('.base_layer', '')}{tuple(param.shape)}".encode())
        digest.update(head.tobytes())
    return digest.hexdigest()[:24]


def pool_key(pipe, prompts: list[str], seed: int, settings: dict) -> str:
    """The key of a pool: base weights, pipeline and scheduler, prompts, seed and sampler ``settings``."""
    payload = {
        "unet": weights_digest(pipe.unet),
        "pipeline": type(pipe).__name__,
        "scheduler": {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")},
        "prompts": prompts,
        "seed": seed,
        **settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def shipped_pools(pipe) -> Path | None:
    """The ``pools`` folder beside the weights ``pipe`` was loaded from, if it has one."""
    folder = Path(getattr(pipe, "name_or_path", None) or "") / "pools"
    return folder if folder.is_dir() else None


def _read(path: Path) -> np.ndarray | None:
    try:
        return load_file(path)["images"].float().numpy()
    except Exception:  # a truncated or foreign file: sample again (and overwrite it if it is the cache's)
        return None


def cached_pool(key: str, make: Callable[[], np.ndarray], disk: bool = True, shipped: Path | None = None) -> np.ndarray:
    """The pool under ``key``: from memory, else the disk cache, else ``shipped``, else ``make()`` (then kept
    in memory and the disk cache).

    Memory keeps one pool (they are large); the disk keeps every pool until the cache is deleted.
    """
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_dir() / "pools" / f"{key}.safetensors"
    images = _read(path) if disk and path.exists() else None
    if images is None and shipped is not None and (shipped / path.name).exists():
        images = _read(shipped / path.name)
    if images is None:
        # kept in half precision (a 1,024-image pool of the embedded model is 6 MB on disk, and that file ships),
        # in memory too, so a pool read back is exactly the pool that was sampled
        images = np.ascontiguousarray(make(), dtype=np.float16).astype(np.float32)
        if disk:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            save_file({"images": torch.from_numpy(images).half()}, str(partial))
            partial.replace(path)  # atomic: a reader never sees half a pool
    _MEMORY.clear()
    _MEMORY[key] = images
    return images
