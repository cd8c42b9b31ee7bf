"""The layer contract: dependencies point one way.

errors -> crypto -> program -> {runtime, workloads, swarm, wire} -> {queen, worker, client}
    -> demo -> {chaos, bench} -> cli

A module may import hswarm modules of lower layers only (and its own package).
``openfhe`` is imported only inside ``hswarm.crypto`` (and never by its pure modules
``params`` and ``opcodes``); ``program`` uses nothing of crypto but those two.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "hswarm"
LAYERS = [
    {"errors"},
    {"crypto"},
    {"program"},
    {"runtime", "workloads", "swarm", "wire"},
    {"queen", "worker", "client"},
    {"demo"},
    {"chaos", "bench"},
    {"cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
PURE_CRYPTO = {"hswarm.crypto.params", "hswarm.crypto.opcodes"}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{module}: use absolute imports (house style)"
            if node.module:
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "hswarm" else None


MODULES = _modules()


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_module_imports_only_lower_layers(module: str, path: Path) -> None:
    own = _layer(module)
    if own is None:  # the package root re-exports the public API
        return
    assert own in RANK, f"{module}: layer {own!r} is not in the layer contract; add it"
    for target in _imports(path, module):
        layer = _layer(target)
        if layer is None or layer not in RANK:
            continue
        assert RANK[layer] < RANK[own] or layer == own, (
            f"{module} imports {target} (a higher or sibling layer)"
        )
        if own == "program" and layer == "crypto":
            allowed = target == "hswarm.crypto" or any(
                target == pure or target.startswith(pure + ".") for pure in PURE_CRYPTO
            )
            assert allowed, f"{module} imports {target}: program may use only crypto.params/opcodes"


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_only_crypto_imports_openfhe(module: str, path: Path) -> None:
    imports = {name.split(".")[0] for name in _imports(path, module)}
    if "openfhe" in imports:
        assert module.startswith("hswarm.crypto.") and module not in PURE_CRYPTO, (
            f"{module} imports openfhe; only hswarm.crypto (not its pure modules) may"
        )
    if "fastapi" in imports:
        assert module.startswith("hswarm.queen"), f"{module} imports fastapi; only hswarm.queen may"


def test_program_layer_loads_no_native_code() -> None:
    code = (
        "import sys, hswarm, hswarm.program, hswarm.program.reference, hswarm.crypto.params, "
        "hswarm.crypto.opcodes; assert 'openfhe' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
