"""edpbrl: personalize a diffusion model from a handful of a person's answers.

The public API, diffusers-style: names load on first use, so ``import edpbrl_plugin.storage`` (the store)
stays light and never imports torch::

    from edpbrl_plugin import personalize, load_shapes_pipeline
    pipe = personalize(load_shapes_pipeline())
    pipe.start_personalization("prefs.db", session="ana")

Layout, top to bottom (each layer imports only those below it): ``hosting`` (process-wide registry and
answer broker for hosts such as ComfyUI) > ``loop`` (session state, the loop, LoRA versions, the diffusers
mixin) > ``tuning`` (LoRA adapters, the one sampler, losses, updates; not named ``personalize``, the
function that adds the loop to a pipeline) > ``querying`` (Fisher information, question
strategies, ED-PBRL prompt design) > ``features`` / ``storage`` > ``learning`` (the answer vocabulary, choice
models, metrics). ``models/shapes`` is the embedded model, a leaf over ``features``; ``simulate`` holds
simulated people and ``bench`` the benchmarks (evaluation only).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Answer": "learning.answers",
    "ChoiceModel": "learning.choice",
    "FeatureEncoder": "features",
    "load_encoder": "features",
    "register_encoder": "features",
    "PreferenceStore": "storage.store",
    "StoreError": "storage.store",
    "UpdateConfig": "tuning.updater",
    "UpdateReport": "tuning.updater",
    "sample_images": "tuning.sampling",
    "PersonalizationSession": "loop.session",
    "PersonalizationLoop": "loop.loop",
    "PersonalizationMixin": "loop.mixin",
    "personalize": "loop.mixin",
    "ShapesPipeline": "models.shapes",
    "EmbeddedEncoder": "models.shapes",
    "load_shapes_pipeline": "models.shapes",
    "run_demo": "demo",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .demo import run_demo
    from .features import FeatureEncoder, load_encoder, register_encoder
    from .learning.answers import Answer
    from .learning.choice import ChoiceModel
    from .loop.loop import PersonalizationLoop
    from .loop.mixin import PersonalizationMixin, personalize
    from .loop.session import PersonalizationSession
    from .models.shapes import EmbeddedEncoder, ShapesPipeline, load_shapes_pipeline
    from .storage.store import PreferenceStore, StoreError
    from .tuning.sampling import sample_images
    from .tuning.updater import UpdateConfig, UpdateReport


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edpbrl_plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
