"""Shared fixtures. Heavy objects (the embedded pipeline, encoder) load once per test session."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

# One BLAS thread per process keeps the CPU tests stable on a 2-core machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Base-sample pools are cached on disk (tuning/pools.py): one fresh cache per test session, never ~/.cache.
os.environ["EDPBRL_CACHE"] = tempfile.mkdtemp(prefix="edpbrl-test-cache-")

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def load_pack(module_name: str):
    """Import the pack root the way ComfyUI does: a module named after its folder, loaded from __init__.py."""
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        module_name, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def pack_fixture(module_name: str):
    """A module-scoped fixture importing the pack root the way ComfyUI does (a module named after its folder,
    loaded from __init__.py), with the store and LoRA folder in a temporary directory and a fresh registry."""

    @pytest.fixture(scope="module")
    def pack(tmp_path_factory):
        tmp = tmp_path_factory.mktemp(module_name)
        patch = pytest.MonkeyPatch()
        patch.setenv("EDPBRL_STORE", str(tmp / "prefs.db"))
        patch.setenv("EDPBRL_LORA_DIR", str(tmp / "loras"))
        from edpbrl_plugin.hosting import registry

        registry.reset()
        yield load_pack(module_name)
        registry.reset()
        patch.undo()

    return pack
