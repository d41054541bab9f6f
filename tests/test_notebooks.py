"""The notebooks in examples/ run top to bottom (on CPU, at small sizes) and are
committed without outputs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))
SMALL = {  # overrides of each notebook's "parameters" cell: seconds, not minutes
    "quickstart": 'SCENARIOS = ["class0"]\nSEEDS = [0]\nTRAIN_EPOCHS = 2\nREPAIR_EPOCHS = 1',
    "your_loop": "TRAIN_EPOCHS = 2\nREPAIR_EPOCHS = 1",
    "paper_pipeline": "SMOKE = True\nRUN = {run!r}",
    # SD v1.4 needs the user's weights and a GPU; here its commands run on a toy model
    "sd_v1_4_colab": "TINY = True\nRUN = {run!r}",
}
INSTALLED = "import scissorhands_jax\nprint('package at', scissorhands_jax.__file__)"
REPO = re.compile(r'^REPO = "https://github\.com/([^/"]+)/scissorhands_jax"$', re.M)


def test_every_notebook_is_here():
    assert {p.stem for p in NOTEBOOKS} == set(SMALL)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code, path
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, (
            f"{path.name} has outputs: clear them before committing "
            "(jupyter nbconvert --clear-output --inplace examples/*.ipynb)"
        )
    first = (
        cells[0]["source"] if isinstance(cells[0]["source"], str) else "".join(cells[0]["source"])
    )
    assert "colab.research.google.com" in first and "colab-badge.svg" in first


def _source(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_repository_setting_and_a_badge_that_matches_it(path):
    cells = json.loads(path.read_text())["cells"]
    (account,) = REPO.findall(_source(cells[1]))  # the setting, alone in the first code cell
    badge = (
        f"https://colab.research.google.com/github/{account}/scissorhands_jax/blob/main/"
        f"examples/{path.name})"
    )
    assert badge in _source(cells[0])
    everything = "".join(_source(c) for c in cells)
    assert "OWNER" not in everything and "experiments/configs" not in everything
    assert "git+{REPO}" in _source(cells[2])  # the install uses the setting
    readme = (ROOT / "README.md").read_text()
    assert f"git+https://github.com/{account}/scissorhands_jax.git" in readme


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, installed_package):
    reason = "needs the docs extra: pip install -e '.[test,docs]'"
    nbformat = pytest.importorskip("nbformat", reason=reason)
    NotebookClient = pytest.importorskip("nbclient", reason=reason).NotebookClient
    pytest.importorskip("ipykernel", reason=reason)

    nb = nbformat.read(path, as_version=4)
    (index,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    small = SMALL[path.stem].format(run=str(tmp_path / "run"))
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(small + "\n" + INSTALLED))
    # as a user runs it: the package installed (not this clone), from a folder elsewhere
    env = {**os.environ, "PYTHONPATH": str(installed_package), "SCISSORHANDS_CACHE": "off"}
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute(env=env)

    def text(cell):
        return "".join(o.get("text", "") for o in cell.get("outputs", []))

    printed = "\n".join(text(c) for c in nb.cells if c.cell_type == "code")
    assert "jax " in printed and " runs on cpu" in printed  # the install cell's check
    assert f"package at {installed_package}" in printed
    if path.stem == "quickstart":
        assert "| digits10_class0 | n | UA |" in printed and "| scissorhands | 1 |" in printed
        assert any(
            o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", [])
        )
    elif path.stem == "your_loop":
        assert "repair epoch 1:" in printed and "unlearned" in printed
    elif path.stem == "sd_v1_4_colab":
        rows = json.loads((tmp_path / "run" / "evaluation.json").read_text())["rows"]
        assert [r["model"] for r in rows] == ["original", "scissorhands"]
        assert "$ scissorhands diffusion-evaluate sd_nudity" in printed
    else:
        rows = json.loads((tmp_path / "run" / "evaluation.json").read_text())["rows"]
        assert [r["model"] for r in rows] == ["retrain", "original", "unlearned"]
