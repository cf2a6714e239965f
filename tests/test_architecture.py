"""The house rules: no import circle anywhere (imports inside functions count), the layer contracts hold,
and the public API lives at the package root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circle_in_the_engine_or_the_nodes():
    sys.path.insert(0, str(ROOT))
    try:
        graph = grimp.build_graph("edpbrl_plugin", "nodes", exclude_type_checking_imports=True, cache_dir=None)
    finally:
        sys.path.remove(str(ROOT))
    assert _cycles(graph) == []


def test_the_layer_contracts_hold():
    result = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_public_api_is_at_the_package_root():
    import edpbrl_plugin

    for name in (
        "personalize",
        "PersonalizationLoop",
        "PersonalizationSession",
        "PersonalizationMixin",
        "UpdateConfig",
        "PreferenceStore",
        "load_encoder",
        "ShapesPipeline",
        "load_shapes_pipeline",
        "sample_images",
    ):
        assert getattr(edpbrl_plugin, name) is not None
    assert edpbrl_plugin.__version__
    for name in edpbrl_plugin.__all__:  # every advertised name resolves (a stale entry raises AttributeError)
        getattr(edpbrl_plugin, name)
