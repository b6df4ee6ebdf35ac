"""Human-readable run listings for ``python -m engine list`` and ``show`` (``--json`` is separate).

People read these, so: local times instead of Unix timestamps, the run's name (or its preset),
which techniques were on, the outcome next to the status, test accuracy and duration; numbers at
four significant digits, grouped by metric family (``train/…``, ``test/…``, ``sharpness/…``).
Pure formatting over plain run dicts (as ``RunStore.get_run`` returns them) so it is testable
without a store; :func:`run_rows` does the store queries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.outcome import TEST_ACC, stored_verdict

if TYPE_CHECKING:
    from engine.store import RunStore

def local_time(timestamp: float | None) -> str:
    """``2026-12-02 16:05`` in the machine's local time zone; ``-`` when unknown."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(float(timestamp)).strftime("%Y-%m-%d %H:%M")


def duration(run: Mapping[str, Any], now: float | None = None) -> str:
    """Wall time from creation to finish (``7.2 s``, ``3 min 05 s``, ``1 h 02 min``); running runs count to now."""
    start, end = run.get("created_at"), run.get("finished_at") or now
    if start is None or end is None:
        return "-"
    seconds = max(0.0, float(end) - float(start))
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def run_label(run: Mapping[str, Any]) -> str:
    """What a person calls the run: its name, else its preset, else its dataset and model."""
    if run.get("name"):
        return str(run["name"])
    if run.get("preset"):
        return str(run["preset"])
    config = run.get("config") or {}
    data, model = (config.get("data") or {}).get("name"), (config.get("model") or {}).get("name")
    return f"{data or '?'} · {model or '?'}"


def techniques(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Enabled techniques with their parameters (a stored config keeps disabled ones with enabled=false)."""
    out = {}
    for name, params in (config.get("regularizers") or {}).items():
        params = params if isinstance(params, Mapping) else {"enabled": params is not False}
        if params.get("enabled", True):
            out[name] = {k: v for k, v in params.items() if k != "enabled"}
    return out


def fmt(value: Any) -> str:
    """Four significant digits for numbers; NaN/inf spelled out; other values as they are."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return f"{value:.4g}"


def run_rows(store: RunStore, runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each run with ``outcome`` and ``reason`` (its verdict replayed from the stored history) and
    ``test_acc`` (final) added."""
    rows = []
    for run in runs:
        verdict = stored_verdict(store, run)
        rows.append({**run, "outcome": verdict.outcome if verdict else "-", "reason": verdict.reason if verdict else "",
                     "test_acc": store.final_metrics(run["id"]).get(TEST_ACC)})
    return rows


def runs_table(rows: Iterable[Mapping[str, Any]], now: float | None = None,
               empty: str = "no runs in this store (start one: python -m engine run --preset noisy-labels)") -> str:
    """Fixed-width table, one run per line, in the given order (newest first from the store)."""
    header = ("ID", "CREATED", "NAME", "PRESET", "TECHNIQUES", "STATUS", "OUTCOME", "TEST ACC", "DURATION")
    lines = []
    for row in rows:
        techs = ", ".join(techniques(row.get("config") or {})) or "-"
        test_acc = row.get("test_acc")
        lines.append((row["id"], local_time(row.get("created_at")), row.get("name") or "-", row.get("preset") or "-",
                      techs if len(techs) <= 28 else techs[:27] + "…", row["status"], row.get("outcome") or "-",
                      "-" if test_acc is None else fmt(test_acc), duration(row, now)))
    if not lines:
        return empty
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in [header, *lines])


def _kv(params: Mapping[str, Any], keys: Iterable[str]) -> str:
    shown = [f"{key.replace('_', ' ')} {fmt(params[key])}" for key in keys if key in params]
    return f" ({', '.join(shown)})" if shown else ""


def config_summary(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, text) lines: dataset, model, optimizer, loss, training length and the techniques on."""
    data, model = config.get("data") or {}, config.get("model") or {}
    optim, loss, train = config.get("optim") or {}, config.get("loss") or {}, config.get("train") or {}
    data_keys = ["n_train", "n_test"] + [k for k in ("noise", "n_labeled") if data.get(k)]
    batch = train.get("batch_size")
    optim_keys = ["lr", "weight_decay"] + (["momentum"] if optim.get("momentum") else []) + (
        ["schedule"] if optim.get("schedule", "constant") != "constant" else [])
    lines = [
        ("data", f"{data.get('name', '?')}{_kv(data, data_keys)}"),
        ("model", f"{model.get('name', '?')}{_kv(model, ('width', 'depth', 'activation'))}"),
        ("optimizer", f"{optim.get('name', '?')}{_kv(optim, optim_keys)}"),
        ("loss", str(loss.get("name", "?"))),
        ("training", f"{fmt(train.get('steps', '?'))} steps, "
                     + ("full batch" if not batch else f"batch {batch}")),
    ]
    techs = techniques(config)
    lines.append(("techniques", "; ".join(f"{name}{_kv(params, params)}" for name, params in techs.items())
                  or "none"))
    return lines


def grouped_metrics(final: Mapping[str, float]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Final metrics grouped by family (the part before ``/``), families and names sorted."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for name in sorted(final):
        family, _, short = name.partition("/")
        groups.setdefault(family if short else "other", []).append((short or name, fmt(final[name])))
    return sorted(groups.items())


def run_details(run: Mapping[str, Any], final: Mapping[str, float], outcome: str, reason: str = "",
                now: float | None = None) -> str:
    """The ``show`` text: header, config summary, verdict with its reason, message, grouped final metrics."""
    lines = [f"run {run['id']}  {run_label(run)}",
             f"  status     {run['status']}" + (f" · outcome {outcome}" if outcome and outcome != "-" else "")
             + (f": {reason}" if reason else ""),
             f"  created    {local_time(run.get('created_at'))}, ran {duration(run, now)}, seed {run.get('seed')}"]
    if run.get("preset"):
        lines.append(f"  preset     {run['preset']}")
    lines += [f"  {label:<10} {text}" for label, text in config_summary(run.get("config") or {})]
    if run.get("message") and run["message"] != reason:
        lines.append(f"  message    {run['message']}")
    if final:
        lines.append("final metrics")
        for family, items in grouped_metrics(final):
            lines.append(f"  {family:<10} " + "  ".join(f"{name} {value}" for name, value in items))
    return "\n".join(lines)


def outcome_word(row: Mapping[str, Any]) -> str:
    """The verdict of a :func:`run_rows` row, or its status while it has none (running, failed, interrupted)."""
    outcome = row.get("outcome")
    return str(outcome) if outcome and outcome != "-" else str(row.get("status") or "-")


def choice_label(row: Mapping[str, Any]) -> str:
    """One line that tells runs apart in a picker: name (and preset), techniques, outcome, test acc, local time.

    Pickers list dozens of runs, so everything a person recognises a run by is on the line and
    nothing needs an id: ``alpha (noisy-labels) · elr · generalized · test 0.96 · 2026-12-02 16:05``.
    """
    name = run_label(row)
    if row.get("name") and row.get("preset"):
        name = f"{name} ({row['preset']})"
    techs = ", ".join(techniques(row.get("config") or {})) or "no technique"
    if len(techs) > 40:
        techs = techs[:39] + "…"
    test_acc = row.get("test_acc")
    parts = [name, techs, outcome_word(row).replace("_", " ")]
    if test_acc is not None and isinstance(test_acc, int | float) and math.isfinite(test_acc):
        parts.append(f"test {test_acc:.2f}")
    parts.append(local_time(row.get("created_at")))
    return " · ".join(parts)
