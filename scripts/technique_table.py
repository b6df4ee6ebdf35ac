"""Generate the README's technique table from the registry (``python scripts/technique_table.py``).

The table sits between two marker comments in README.md; ``--check`` exits 1 when the README is
out of date (the unit test calls ``render``/``current`` directly).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

START, END = "<!-- techniques:start -->", "<!-- techniques:end -->"


def render() -> str:
    from engine.regularizers import describe_all

    rows = ["| technique | group | parameters (default; * = live) | idea | source |", "|---|---|---|---|---|"]
    for item in sorted(describe_all(), key=lambda t: (t["group"], t["name"])):
        params = ", ".join(f"{p['name']}={p['default']}{'*' if p['live'] else ''}" for p in item["params"]) or "—"
        cells = [f"`{item['name']}`", item["group"], params, item["summary"], item["source"]]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def current(readme: str) -> str:
    return readme.split(START, 1)[1].split(END, 1)[0].strip()


def main(argv: list[str]) -> int:
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    table = render()
    if "--check" in argv:
        return 0 if current(text) == table else 1
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    path.write_text(f"{before}{START}\n{table}\n{END}{after}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
