"""ComfyUI node classes: thin adapters over the engine in ``edpbrl_plugin``."""

from edpbrl_plugin.hosting import registry

from . import comfy_bridge
from .nodes_loop import Ask, DesignPrompts, FeatureEncoder, LoadPipeline, RecordAnswer, SampleCandidates, SelectQuery
from .nodes_lora import SaveLoRA, SessionStatus, UpdateLoRA
from .routes import register as _register_routes

_NODES = {
    "EDPBRL_LoadPipeline": (LoadPipeline, "EDPBRL Load Pipeline"),
    "EDPBRL_FeatureEncoder": (FeatureEncoder, "EDPBRL Feature Encoder"),
    "EDPBRL_SampleCandidates": (SampleCandidates, "EDPBRL Sample Candidates"),
    "EDPBRL_DesignPrompts": (DesignPrompts, "EDPBRL Design Prompts (ED-PBRL)"),
    "EDPBRL_SelectQuery": (SelectQuery, "EDPBRL Select Query (Fisher)"),
    "EDPBRL_Ask": (Ask, "EDPBRL Ask"),
    "EDPBRL_RecordAnswer": (RecordAnswer, "EDPBRL Record + Update Reward"),
    "EDPBRL_UpdateLoRA": (UpdateLoRA, "EDPBRL Update LoRA"),
    "EDPBRL_SaveLoRA": (SaveLoRA, "EDPBRL Save LoRA"),
    "EDPBRL_SessionStatus": (SessionStatus, "EDPBRL Session Status"),
}

NODE_CLASS_MAPPINGS = {key: cls for key, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {key: name for key, (_, name) in _NODES.items()}

registry.use_host_store(comfy_bridge.user_store())  # before any node or route opens the store
_register_routes()
