"""Imports inside ``trajemb`` point one way, down the layers (docs/architecture.md).

Layers, lowest first: core (safety and I/O) -> data -> retrieval -> training -> analysis (evaluation,
mining, forecasting, realism) -> serving -> interface (the command line). A module may import its own
layer or a lower one, never a higher one. Every import counts, at module level or inside a function,
``TYPE_CHECKING`` included. Works on the flat tree and on the tree grouped into subpackages (where a
module's package must be its layer).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "trajemb"
LAYERS = ("core", "data", "retrieval", "training", "analysis", "serving", "interface")
#: Module (by its own name) -> layer. A new module needs a line here: the test says so.
LAYER_OF = {
    **dict.fromkeys(
        (
            "errors",
            "validate",
            "fields",
            "atomic",
            "outputs",
            "interrupts",
            "paths",
            "jsonio",
            "integrity",
            "workers",
            "devices",
            "ray_runtime",
        ),
        "core",
    ),
    **dict.fromkeys(
        (
            "schema",
            "frames",
            "lanes",
            "labels",
            "truth",
            "windows",
            "perturb",
            "history",
            "query",
            "store",
            "prepare",
            "map_check",
            "av2_motion",
            "av2_sensor",
            "maps",
            "ray_prepare",
            "synth",
        ),
        "data",
    ),
    **dict.fromkeys(("search", "index", "metrics", "robustness", "projection"), "retrieval"),
    **dict.fromkeys(
        (
            "model",
            "linear_base",
            "similarity",
            "mining",
            "losses",
            "soft_neighbor_loss",
            "distill_loss",
            "batch_loss",
            "batches",
            "augment",
            "train",
            "train_state",
            "run_folder",
            "checkpoint",
            "embed",
            "distributed",
            "ray_embed",
        ),
        "training",
    ),
    **dict.fromkeys(
        (
            "bundle",
            "evaluate",
            "report",
            "label_quality",
            "uniqueness",
            "duplicates",
            "sketch",
            "export",
            "motion_models",
            "forecast_metrics",
            "forecast",
            "forecast_command",
            "realism",
            "realism_transfer",
            "realism_report",
        ),
        "analysis",
    ),
    **dict.fromkeys(("bundle_build", "completion", "explore", "viz", "pipeline"), "serving"),
    **dict.fromkeys(("cli", "cli_fields", "__main__", "_moved"), "interface"),
}
#: Folders that only group modules of other layers (the Ray engines beside what they wrap).
GROUPING = ("engines",)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(name: str) -> str:
    """The layer of module ``trajemb.<...>``: its package where it is a layer's, else its own name's."""
    parts = name.split(".")[1:]
    if not parts:
        return "interface"
    if parts[0] in LAYERS and parts[0] != "interface":
        own = LAYER_OF.get(parts[1]) if len(parts) > 1 else None
        assert own in (None, parts[0]), f"{name} is in {parts[0]}/ but its layer is {own}"
        return parts[0]
    if parts[0] in GROUPING:
        if len(parts) == 1:
            return "core"  # the folder's own __init__ imports nothing
        parts = parts[1:]
    assert parts[0] in LAYER_OF, f"give trajemb module {name} a layer in tests/test_layers.py's LAYER_OF"
    return LAYER_OF[parts[0]]


def imports(path: Path) -> set[str]:
    """Every ``trajemb`` module ``path`` imports (``from trajemb import x`` names module ``x``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("trajemb.")}
        elif (
            isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("trajemb")
        ):
            module = str(node.module)
            out.add(module)
            out |= {f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES}
    return {m for m in out if m in MODULES and m != "trajemb"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_the_layers(name: str) -> None:
    own = LAYERS.index(layer(name))
    upward = sorted(f"{m} ({layer(m)})" for m in imports(MODULES[name]) if LAYERS.index(layer(m)) > own)
    assert not upward, f"{name} ({layer(name)}) imports a higher layer: {', '.join(upward)}"


def test_every_module_has_a_layer() -> None:
    assert len(MODULES) > 40
    for name in MODULES:
        layer(name)
