"""The README's Python snippets run as written, and its first lines are the two commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    lines = [line for line in first_block.splitlines() if line.strip()]
    assert lines == [
        "pip install . && scissorhands demo --out out/digits",
        'pip install -e ".[test]" && python -m pytest',
    ]


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs(index):
    assert SNIPPETS, "the README has no python snippet"
    exec(compile(SNIPPETS[index], f"README.md snippet {index}", "exec"), {})
