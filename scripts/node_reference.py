"""Print the README's node reference table from the node classes themselves (so it never drifts)."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "edpbrl_pack", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
)
pack = importlib.util.module_from_spec(spec)
sys.modules["edpbrl_pack"] = pack
spec.loader.exec_module(pack)

print("| node | inputs | outputs | what it does |")
print("|---|---|---|---|")
for name, cls in pack.NODE_CLASS_MAPPINGS.items():
    spec = cls.INPUT_TYPES()
    inputs = [f"`{k}`" for k in spec["required"]] + [f"`{k}`?" for k in spec.get("optional", {})]
    outputs = [f"`{n}` ({t})" for n, t in zip(cls.RETURN_NAMES, cls.RETURN_TYPES)]
    display = pack.NODE_DISPLAY_NAME_MAPPINGS[name]
    print(f"| **{display}** (`{name}`) | {', '.join(inputs)} | {', '.join(outputs)} | {cls.DESCRIPTION} |")
