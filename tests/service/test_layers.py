"""The service's packages import only downwards: no module imports from a layer above its own.

base (errors, clock, inputs, schemas, storage, ...) < alarms < scoring < patients < ward <
lifecycle < fhir < services (the container) < api < app (with its middleware, gate). A rule that needs something from above
is in the wrong place (or is handed it by the container)."""
from __future__ import annotations

import ast
from pathlib import Path

import service

ROOT = Path(service.__file__).resolve().parent
LAYERS = ["alarms", "scoring", "patients", "ward", "lifecycle", "fhir", "services", "api", "app"]
TOP = {"app": "app", "asgi": "app", "__main__": "app", "gate": "app", "services": "services"}  # gate: the app's middleware


def _layer(module: str) -> int:
    """0 for the base modules, else 1 + the index of the module's package in LAYERS."""
    parts = module.split(".")
    if parts[0] != "service" or len(parts) == 1:
        return -1
    name = TOP.get(parts[1], parts[1])
    return LAYERS.index(name) + 1 if name in LAYERS else 0


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:  # from service import schemas -> service.schemas
                yield f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def test_no_import_runs_back_up_the_layers():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        me = _module(path)
        for target in _imports(path):
            if _layer(target) > _layer(me) >= 0 and not target.startswith(me):
                upward.append(f"{me} imports {target}")
    assert upward == []


def test_the_layer_check_sees_an_upward_import():
    assert _layer("service.scoring.ingest") > _layer("service.alarms.store") > _layer("service.errors") == 0
    assert _layer("service.api.deps") > _layer("service.services") > _layer("service.fhir.store")
