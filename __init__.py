"""ComfyUI entry point of the edpbrl node pack.

ComfyUI imports this folder as a package. The engine is imported absolutely as ``edpbrl_plugin``
(one module object for the nodes and the routes), so this folder goes on ``sys.path``.
"""

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)  # appended: never shadows ComfyUI's own modules (it has a `nodes` too)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./nodes/web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
