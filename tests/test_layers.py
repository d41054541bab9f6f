"""The package's layers import only downward, and the package imports cheaply.

core (saliency, top-k, re-init, memory, projection) -> models and data -> training ->
methods (Scissorhands, baselines, diffusion unlearning) -> experiments (the ``experiment``
package: configs, run directories, pipelines, compare, audit, reports) -> cli. Imports are
read from the source with ``ast`` (imports inside functions count too), so a lazy import
cannot hide an upward edge.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scissorhands_jax"

LAYERS = [
    # (layer, regexes over module names relative to the package)
    ("core", r"_types|_lazy|_qp|_seed|_tree_digest|_first_conv|_versions|precision|preemption"
     r"|_choices|settings|saliency|reinit|memory|stored_memory"
     r"|projection|parallel"),
    ("models_data", r"models(\..*)?|data(\..*)?|checkpoint|metrics(\..*)?"
     r"|diffusion\.(model|schedule|sampler|metrics|inception|grid|data)|sd(\..*)?"),
    ("training", r"training|loop|resumable|objective|trimming|repairing|population"),
    ("methods", r"method|calibration|baselines(\..*)?|diffusion|diffusion\.(unlearn|baselines)"),
    ("experiments", r"experiment(\..*)?|configs(\..*)?|diffusion\.(demo|convert_inception)"),
    ("cli", r"cli|__main__|commands(\..*)?"),
    ("package", r""),  # the package's own __init__ re-exports every layer
]  # fmt: skip


def layer_of(module: str) -> int:
    for i, (_, pattern) in enumerate(LAYERS):
        if re.fullmatch(pattern, module):
            return i
    raise AssertionError(f"module {module!r} has no layer; add it to LAYERS")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module relative to the package, imported names)`` of every import in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "scissorhands_jax" or node.module.startswith("scissorhands_jax."):
                mod = node.module.removeprefix("scissorhands_jax").removeprefix(".")
                names = [a.name for a in node.names]
                if not mod:  # from scissorhands_jax import data, compare: submodules
                    out += [(n, []) for n in names]
                else:
                    out.append((mod, names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("scissorhands_jax."):
                    out.append((alias.name.removeprefix("scissorhands_jax."), []))
    return out


def _resolve(target: str, known: dict[str, Path]) -> str:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target


ALL = modules()


def test_every_module_has_a_layer():
    for name in ALL:
        if name:
            layer_of(name)


@pytest.mark.parametrize("name", sorted(n for n in ALL if n))
def test_imports_only_go_down(name):
    mine = layer_of(name)
    for target, _ in imports(ALL[name]):
        resolved = _resolve(target, ALL)
        if not resolved or resolved == name or name.startswith(resolved + "."):
            continue  # the package itself, or a parent package's __init__
        theirs = layer_of(resolved)
        assert theirs <= mine, (
            f"{name} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]}): upward"
        )


@pytest.mark.parametrize("name", sorted(n for n in ALL if n))
def test_no_private_names_across_modules(name):
    for target, names in imports(ALL[name]):
        parent = _resolve(target, ALL).rpartition(".")[0]
        own_package = name == parent or name.startswith(parent + ".") if parent else True
        private_module = any(p.startswith("_") for p in target.split(".") if p)
        if private_module and target not in ("_types", "_lazy"):
            assert own_package, f"{name} imports the private module {target}"
        for n in names:  # from package import _module: a private module
            if f"{target}.{n}" in ALL and n.startswith("_"):
                assert name.startswith(target + "."), f"{name} imports the private {target}.{n}"
        bad = [n for n in names if n.startswith("_") and f"{target}.{n}" not in ALL]
        assert not bad, f"{name} imports private names {bad} from {target}"


def test_only_commands_import_commands():
    for name, path in ALL.items():
        if name.startswith("commands") or name == "cli":
            continue
        for target, _ in imports(path):
            assert not target.startswith("commands"), f"{name} imports {target}"


def test_import_loads_only_the_numeric_stack():
    code = (
        "import sys, scissorhands_jax\n"
        "heavy = ('sklearn', 'orbax', 'tensorflow_datasets', 'tensorflow', 'PIL', 'scipy',"
        " 'tqdm', 'scissorhands_jax.diffusion', 'scissorhands_jax.baselines')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", out
