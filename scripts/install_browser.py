"""Make sure a Chromium-based browser exists for PNG/SVG/PDF export (kaleido renders through one).

    python scripts/install_browser.py            find a browser; install one when missing
    python scripts/install_browser.py --check    report what is present and what it would do; change nothing
    python scripts/install_browser.py --require-debian   the test suite: Debian's /usr/bin/chromium or fail

Order of preference, the same one kaleido uses to *find* a browser: ``BROWSER_PATH``, a browser
on ``PATH`` or in a typical location (Debian's ``/usr/bin/chromium`` among them), kaleido's own
download. When none is found: Debian's ``chromium`` package through apt-get when this machine has
apt-get and root (or password-less sudo), else kaleido's download of Chrome for Testing where the
network allows it. Nothing here is fatal for the app: when no browser can be had, the script says
so in one line and exits 0, because HTML and CSV export (and everything else) work without one.

Runs with any Python 3.11: it uses the engine's lookup (``engine/browser.py``, kaleido's own
search) when the project is installed, and a plain ``PATH`` search otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

DEBIAN_CHROMIUM = "/usr/bin/chromium"
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
NO_BROWSER = ("no Chromium-based browser found: PNG/SVG/PDF export is unavailable (HTML and CSV export work); "
              "install one with `apt-get install chromium` or `kaleido_get_chrome` (needs the network)")


def find_browser() -> str | None:
    """The browser kaleido would use (the engine's own lookup when installed), or None."""
    try:
        from engine.browser import browser_path
    except ImportError:  # before the project is installed: a plain PATH search
        override = os.environ.get("BROWSER_PATH")
        if override:
            return override if os.access(override, os.X_OK) else None
        return next((path for name in NAMES if (path := shutil.which(name))), None)
    return browser_path(fresh=True)


def _sudo() -> list[str] | None:
    """Prefix for a root command: [] as root, ["sudo", "-n"] with password-less sudo, else None."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def plan() -> str:
    """What an install would do here: "apt", "kaleido" or "none"."""
    if shutil.which("apt-get") and _sudo() is not None:
        return "apt"
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "none"
    return "kaleido"


def install_debian() -> bool:
    prefix = _sudo()
    if prefix is None or not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run([*prefix, *command], env=env, stdout=subprocess.DEVNULL).returncode != 0:
            return False
    return os.access(DEBIAN_CHROMIUM, os.X_OK)


def install_kaleido_chrome() -> bool:
    try:
        import kaleido

        kaleido.get_chrome_sync()
    except Exception as err:  # a closed network, an unsupported platform: report, don't crash
        print(f"kaleido could not download Chrome: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
              file=sys.stderr)
        return False
    return find_browser() is not None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report only; install nothing")
    parser.add_argument("--require-debian", action="store_true",
                        help=f"ensure {DEBIAN_CHROMIUM} (the browser tests drive it); exit 1 when impossible")
    args = parser.parse_args(argv)
    if args.require_debian:
        if os.access(DEBIAN_CHROMIUM, os.X_OK) or install_debian():
            print(f"browser: {DEBIAN_CHROMIUM}")
            return 0
        print(f"cannot install Debian's chromium (needs apt-get and root or password-less sudo); "
              f"the browser tests need {DEBIAN_CHROMIUM}", file=sys.stderr)
        return 1
    found = find_browser()
    if found:
        print(f"browser: {found} (PNG/SVG/PDF export available)")
        return 0
    action = plan()
    if args.check:
        print({"apt": "browser: none; would install Debian's chromium with apt-get",
               "kaleido": "browser: none; would download Chrome for Testing with kaleido (needs the network)",
               "none": "browser: none; no way to install one here (no apt-get with root, no kaleido)"}[action])
        return 0
    installed = (action == "apt" and install_debian()) or (action != "none" and install_kaleido_chrome())
    found = find_browser() if installed else None
    print(f"browser: {found} (PNG/SVG/PDF export available)" if found else NO_BROWSER)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
