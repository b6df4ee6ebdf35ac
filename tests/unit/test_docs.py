"""docs/ is generated from the code and cites nothing outside the repository."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"(techniques|diagnostics|phenomena|design)(\.md)? ?§|\.\./shared/")


def _gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_pages_are_current() -> None:
    stale = _gen_docs().stale_pages()
    assert stale == [], f"stale docs {stale}: run python scripts/gen_docs.py"


def test_every_technique_instrument_preset_and_key_is_documented() -> None:
    from engine.config import RunConfig
    from engine.diagnostics import all_diagnostics
    from engine.presets import preset_ids
    from engine.regularizers import all_techniques

    techniques = (ROOT / "docs" / "techniques.md").read_text(encoding="utf-8")
    diagnostics = (ROOT / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    presets = (ROOT / "docs" / "presets.md").read_text(encoding="utf-8")
    config = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert all(f"### `{name}`" in techniques for name in all_techniques())
    assert all(f"## `{name}`" in diagnostics for name in all_diagnostics())
    for pid in preset_ids():
        assert f"[`{pid}`](../assets/presets/{pid}.md)" in presets
        assert (ROOT / "assets" / "presets" / f"{pid}.md").exists()
    for key in ("seed", "data.name", "data.noise", "data.p", "optim.lr", "optim.momentum", "loss.q", "train.steps"):
        assert f"| `{key}` |" in config, key
    assert "|  |" not in config, "a config key without a meaning"
    documented = {line.split("`")[1].split(".")[0] for line in config.splitlines() if line.startswith("| `")}
    assert set(RunConfig.model_fields) <= documented


def test_nothing_cites_documents_outside_the_repository() -> None:
    places = [ROOT / "README.md", ROOT / "app.py", *ROOT.glob("docs/*.md"), *ROOT.glob("assets/presets/*.md"),
              *ROOT.glob("engine/**/*.py"), *ROOT.glob("engine/presets/*.yaml"), *ROOT.glob("pages/*.py")]
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in places
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if OUTSIDE.search(line)]
    assert offenders == []
