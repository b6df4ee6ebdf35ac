"""The README's technique table is generated from the registry and must not fall out of date."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_technique_table_is_current() -> None:
    spec = importlib.util.spec_from_file_location("technique_table", ROOT / "scripts" / "technique_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert module.current(readme) == module.render(), "run: python scripts/technique_table.py"
