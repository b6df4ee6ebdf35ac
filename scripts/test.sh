#!/usr/bin/env bash
# Install everything the test suite needs, then run all of it (unit, repro, app, browser).
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Browser tests and plot export use Debian's Chromium (installed through apt-get when missing).
python3 scripts/install_browser.py --require-debian

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt -e .

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2}
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
