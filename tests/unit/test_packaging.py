"""The package is installable and declares what it imports.

``pyproject.toml`` is the source of truth for dependencies; ``requirements*.txt`` stay for the
README's one-line commands and must list the same things. Every third-party module that the
engine or the app imports (module level or lazily inside a function) must come from a declared
distribution, so ``pip install -e .`` on a fresh machine gives a working lab.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"engine", "pages", "tests", "benchmarks", "scripts", "behaviour"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirement_lines(name: str) -> set[str]:
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith(("#", "-r", "-e"))}


def _dist_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_files_match_pyproject() -> None:
    project = _pyproject()["project"]
    assert set(project["dependencies"]) == _requirement_lines("requirements.txt")
    assert set(project["optional-dependencies"]["dev"]) == _requirement_lines("requirements-dev.txt")
    assert "torch==2.13.0" in project["dependencies"]  # an unpinned torch pulls several GB of CUDA wheels


def _imported_modules(paths: list[Path]) -> dict[str, str]:
    """Top-level module name → first file importing it (every import statement, lazy ones too)."""
    found: dict[str, str] = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared() -> None:
    project = _pyproject()["project"]
    declared = {_dist_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_dist_name(r) for r in extra}
    sources = [*sorted((ROOT / "engine").rglob("*.py")), *sorted((ROOT / "pages").glob("*.py")), ROOT / "app.py"]
    dists_of = metadata.packages_distributions()
    missing = []
    for module, where in sorted(_imported_modules(sources).items()):
        if module in sys.stdlib_module_names or module in FIRST_PARTY:
            continue
        dists = {d.lower().replace("_", "-") for d in dists_of.get(module, [])}
        if not dists & declared:
            missing.append(f"{module} (imported in {where}; provided by {sorted(dists) or 'nothing installed'})")
    assert not missing, "undeclared third-party imports: " + "; ".join(missing)


def test_no_sys_path_edits() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("engine", "pages", "tests", "benchmarks", "scripts")
        for path in (ROOT / folder).rglob("*.py")
        if re.search(r"sys\.path\.(insert|append)\(", path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_console_script_lab_is_the_cli() -> None:
    assert _pyproject()["project"]["scripts"] == {"lab": "engine.cli:main"}
    script = Path(sys.executable).with_name("lab")
    if not script.exists():
        pytest.skip("package not installed in this environment (pip install -e .)")
    via_script = subprocess.run([str(script), "presets", "--json"], capture_output=True, text=True, check=True)
    via_module = subprocess.run([sys.executable, "-m", "engine", "presets", "--json"], capture_output=True,
                                text=True, check=True, cwd=ROOT)
    assert json.loads(via_script.stdout) == json.loads(via_module.stdout)
    assert json.loads(via_script.stdout)  # a non-empty preset list
