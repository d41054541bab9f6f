"""The package's layers import only downward, and the package imports cheaply.

core (saliency, top-k, re-init, memory, projection) -> models and data -> training ->
methods (Scissorhands, baselines, diffusion unlearning) -> experiments (the ``experiment``
package: configs, run directories, pipelines, compare, audit, reports) -> cli. Imports are
read from the source with ``ast`` (imports inside functions count too), so a lazy import
cannot hide an upward edge. On the same graph: no import cycle, and only the experiment
package and the commands read a config or write a run directory.
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
    ("core", r"_types|_lazy|_qp|_seed|_tree_digest|_first_conv|_versions|_precision|_preemption"
     r"|_choices|_settings|_saliency|_reinit|_memory|_stored_memory"
     r"|_projection|parallel"),
    ("models_data", r"models(\..*)?|data(\..*)?|_checkpoint|metrics(\..*)?"
     r"|diffusion\.(model|schedule|sampler|metrics|inception|grid|data)"),
    ("training", r"_training|_loop|_resumable|_objective|_trim|_repair|population"),
    ("methods", r"_method|_calibration|baselines(\..*)?|diffusion|diffusion\.(unlearn|baselines)"
     r"|sd(\..*)?"),
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


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at any depth of its code), leaving out
    the package itself and the module's own parent packages (an ``__init__`` that
    re-exports its children is not a cycle with them)."""
    graph: dict[str, set[str]] = {}
    for name, path in ALL.items():
        targets = set()
        for target, names in imports(path):
            submodules = {f"{target}.{n}" for n in names if f"{target}.{n}" in ALL}
            targets |= submodules  # from package import module: an edge to the module
            if not names or len(submodules) < len(names):
                targets.add(_resolve(target, ALL))
        graph[name] = {t for t in targets if t and t != name and not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_by_hand():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert sorted(cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}})) == [
        ["a", "b"],
        ["c", "d"],
    ]


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph()) == []


RUN_DIRECTORY_IO = {
    "load_config",
    "find_config",
    "run_directory",
    "check_setting",
    "read_state",
    "write_json_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
    "prepare_out_dir",
}
"""Functions that read an experiment config or write a run directory."""
CONFIG_AND_RUN_MODULES = ("experiment.config", "experiment.rules", "experiment.rundir")

EXPECTED_EXCEPTIONS: set[str] = set()


def _reads_config_or_writes_runs(path: Path) -> list[str]:
    found = []
    for target, names in imports(path):
        if target.startswith(CONFIG_AND_RUN_MODULES):
            found.append(f"imports {target}")
        if target == "experiment" and {"config", "rules", "rundir"} & set(names):
            found.append(f"imports experiment.{sorted({'config', 'rules', 'rundir'} & set(names))}")
        found += [f"imports {n} from {target}" for n in names if n in RUN_DIRECTORY_IO]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called in RUN_DIRECTORY_IO:
                found.append(f"calls {called} (line {node.lineno})")
    return found


def test_io_checker_by_hand(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from scissorhands_jax.experiment.rundir import write_json_atomic\n"
        "def f(out):\n    write_json_atomic(out, {})\n"
    )
    assert _reads_config_or_writes_runs(module) == [
        "imports experiment.rundir",
        "imports write_json_atomic from experiment.rundir",
        "calls write_json_atomic (line 3)",
    ]
    module.write_text("from scissorhands_jax.experiment import config\nconfig.load_config('x')\n")
    assert len(_reads_config_or_writes_runs(module)) == 2
    module.write_text("import json\n\ndef f(x):\n    return json.dumps(x)\n")
    assert _reads_config_or_writes_runs(module) == []


@pytest.mark.parametrize("name", sorted(n for n in ALL if n))
def test_only_experiments_and_commands_read_configs_or_write_run_directories(name):
    top = name.split(".")[0]
    if top in ("experiment", "commands", "cli", "__main__") or name in EXPECTED_EXCEPTIONS:
        return
    assert _reads_config_or_writes_runs(ALL[name]) == [], name
