"""The package's shape is a rule, not a hope: layers import downwards only, and across
packages only through a package's front door (its ``__init__``).

A reader finds where a behaviour lives from the folder names alone (docs/design.md):

    domain   shared vocabulary, stated once (origin spec, health, roles)
    crdt     delta-state CRDTs              ┐
    store    the SD-card log                │ cores: sans-I/O where they can be,
    membership  SWIM + memberlist's wire    │ each with its own thin adapter
    checks   probes and their state machine ┘
    node     the sans-I/O node core (placement, handoff, state, replication)
    shell    everything that touches the OS: runtime wiring, cluster, API, LEDs, CLI

Every module of a package other than its ``__init__`` is private to that package.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "agent"

# what each package may import (besides itself and the top-level ``agent`` for the version)
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "crdt": {"domain"},
    "store": {"domain"},
    "membership": {"domain", "store"},
    "checks": {"domain"},
    "node": {"domain", "crdt", "store", "membership", "checks"},
    "shell": {"domain", "crdt", "store", "membership", "checks", "node"},
}


def _package_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) for every absolute ``agent`` import, type-only ones too."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "agent" or node.module.startswith("agent."):
                out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("agent."):
                    out.append((node.lineno, a.name, []))
    return out


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "static" not in p.parts)


def test_every_module_lives_in_a_layer() -> None:
    stray = [
        str(p.relative_to(ROOT))
        for p in _modules()
        if _package_of(p) not in ALLOWED and p.name != "__init__.py"
    ]
    assert not stray, f"modules outside the layered packages: {stray}"


def test_layers_import_downwards_only() -> None:
    wrong = []
    for path in _modules():
        mine = _package_of(path)
        if mine not in ALLOWED:
            continue
        for line, module, _ in _imports(path):
            parts = module.split(".")
            if len(parts) < 2:
                continue  # `from agent import __version__`
            theirs = parts[1]
            if theirs != mine and theirs not in ALLOWED[mine]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {module}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_other_packages_are_entered_by_their_front_door() -> None:
    private = []
    for path in _modules():
        mine = _package_of(path)
        for line, module, names in _imports(path):
            parts = module.split(".")
            if len(parts) == 2 and parts[1] != mine:
                # `from agent.store import recovery` names a module: private as well
                folder = PACKAGE / parts[1]
                modules = [n for n in names if (folder / f"{n}.py").exists()]
                if modules:
                    private.append(f"{path.relative_to(ROOT)}:{line} imports {module} {modules}")
                continue
            if len(parts) < 3 or parts[1] == mine:
                continue
            private.append(f"{path.relative_to(ROOT)}:{line} imports {module} {names}")
    assert not private, "imports of another package's private module:\n" + "\n".join(private)


def test_the_front_doors_export_what_they_import() -> None:
    """Each ``__init__`` lists its public names in ``__all__`` (what the others may use)."""
    missing = []
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        tree = ast.parse(init.read_text())
        names = {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        imported = [n for node in tree.body if isinstance(node, ast.ImportFrom) for n in node.names]
        if imported and "__all__" not in names:
            missing.append(str(init.relative_to(ROOT)))
    assert not missing, f"front doors without __all__: {missing}"
