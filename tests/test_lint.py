"""The house checks itself: imports run downwards with no circles, ruff's checks, no path hacks, no history
in docstrings, and a README a newcomer reads in minutes."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

BIN = Path(sys.executable).parent
SOURCES = [ROOT / "core", ROOT / "pages", ROOT / "tests", ROOT / "bench", ROOT / "docs", ROOT / "app.py",
           ROOT / "serve.py"]


def _python_files():
    for source in SOURCES:
        yield from ([source] if source.is_file() else sorted(source.rglob("*.py")))


def test_imports_run_downwards_with_no_circles():
    result = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_ruff_finds_nothing():
    result = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", *map(str, SOURCES)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_core_holds_only_subpackages_and_its_entry_points():
    loose = {p.name for p in (ROOT / "core").glob("*.py")}
    assert loose == {"__init__.py", "__main__.py", "cli.py"}
    for package in (p for p in (ROOT / "core").iterdir() if p.is_dir() and p.name != "__pycache__"):
        if any(package.glob("*.py")):
            doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
            assert doc and len(doc.splitlines()) <= 2, f"{package.name}/__init__.py says what it owns in two lines"


def test_no_file_edits_the_import_path():
    for path in list(_python_files()) + [ROOT / "Makefile", ROOT / ".ci" / "run"]:
        text = path.read_text()
        assert not re.search(r"sys\.path\.(insert|append)|PYTHONPATH", text) or path.name == "test_lint.py", path


def test_docstrings_say_what_a_thing_is_not_its_history():
    history = re.compile(r"\b(issue|stop) \d+\b|\bissues? #\d+", re.IGNORECASE)
    for path in (p for p in _python_files() if p.is_relative_to(ROOT / "core") or p.is_relative_to(ROOT / "pages")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                assert not history.search(doc), f"{path.relative_to(ROOT)}: {history.search(doc).group(0)!r}"


def test_the_readme_is_a_newcomers_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for link in re.findall(r"\]\((docs/[^)#]+)", readme) + re.findall(r'src="(docs/[^"]+)"', readme):
        assert (ROOT / link).exists(), link
