"""The README's Python blocks run as written, in order, in one namespace (as a reader pasting
them into one session would): keeps the first example, the data path and the calculator
snippet honest."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_blocks():
    assert len(python_blocks()) >= 3


def test_readme_python_blocks_run(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a fresh shell anywhere: no checkout paths assumed
    namespace = {}
    for k, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"README.md python block {k}", "exec"), namespace)
        except Exception as exc:  # name the block that broke
            pytest.fail(f"README python block {k} failed: {type(exc).__name__}: {exc}\n{block}")
    assert namespace["out"]["forces"].shape == (len(namespace["atoms"]), 3)
