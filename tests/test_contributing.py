"""CONTRIBUTING.md stays true: every file it names exists, every test it names is a test in that file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATH = re.compile(r"`((?:src|tests|docs|benchmarks|configs|scripts)/[\w./-]+?)(?:::(\w+))?`")


def test_every_file_and_test_contributing_names_exists():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    named = PATH.findall(text)
    assert len(named) > 10  # the map names its files; a change of format must not make this test vacuous
    tests_named = re.findall(r"`(test_\w+)`", text)
    for path, test in named:
        assert (ROOT / path).exists(), f"CONTRIBUTING.md names {path}, which does not exist"
        if test:
            tests_named.append(f"{path}::{test}")
    defined = {
        f"tests/{p.name}::{n.name}"
        for p in (ROOT / "tests").glob("test_*.py")
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    }
    bare = {d.split("::")[1] for d in defined}
    for t in tests_named:
        assert (t in defined) if "::" in t else (t in bare), f"CONTRIBUTING.md names the test {t}, which does not exist"
