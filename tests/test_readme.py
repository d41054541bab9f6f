"""The README: one screen of front page, its two commands (the second is what CI runs),
and Python snippets that run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
COMMANDS = [
    "pip install . && scissorhands demo --out out/digits",
    'pip install -e ".[test,docs]" && python -m pytest',
]


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    lines = [line for line in first_block.splitlines() if line.strip()]
    assert lines == COMMANDS


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install --quiet -e ".[test,docs]"' in ci
    assert "\npython -m pytest\n" in ci


def test_readme_fits_in_12_kb():
    assert len(README.read_bytes()) <= 12_000


def test_no_page_suggests_installing_from_an_index():
    configs = (ROOT / "scissorhands_jax" / "configs").glob("*.py")
    scripts = (ROOT / "experiments").rglob("*.py")
    for page in (README, *(ROOT / "docs").glob("*.md"), *scripts, *configs):
        text = page.read_text()
        assert 'install "scissorhands_jax' not in text, page  # not on an index: path or URL
        assert "install scissorhands_jax" not in text, page


def test_readme_links_resolve():
    for target in re.findall(r"\]\(((?:docs|examples)/[^)#]+)", README.read_text()):
        assert (ROOT / target).exists(), target


@pytest.mark.slow  # ~20 s each, mostly compilation
@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs(index):
    assert SNIPPETS, "the README has no python snippet"
    exec(compile(SNIPPETS[index], f"README.md snippet {index}", "exec"), {})
