"""scripts/install_browser.py --check: reports the browser kaleido would use, or what it would install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_browser.py"


def _check(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_check_reports_the_browser_in_use(tmp_path: Path) -> None:
    fake = tmp_path / "my-chromium"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    done = _check(BROWSER_PATH=str(fake))
    assert done.returncode == 0
    assert done.stdout.strip() == f"browser: {fake} (PNG/SVG/PDF export available)"


def test_check_without_a_browser_says_what_it_would_do_and_installs_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-browser"
    done = _check(BROWSER_PATH=str(missing))
    assert done.returncode == 0
    line = done.stdout.strip()
    assert line.startswith("browser: none; ") and "\n" not in line
    assert ("apt-get" in line) or ("kaleido" in line) or ("no way to install" in line)
    assert not missing.exists()
