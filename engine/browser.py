"""Which Chromium-based browser PNG/SVG/PDF export would use, if any.

kaleido renders static images through a headless Chromium and finds it with choreographer's
public ``Chromium.find_browser`` (``BROWSER_PATH``, then ``PATH`` and the usual install folders,
then kaleido's own download). Without a browser kaleido's render thread fails with a traceback
and the render never answers, so export asks here first and says in one line what is missing and
how to get it; HTML and CSV need no browser. The lookup is a few ``stat`` calls, cached briefly
because the app's download menus ask on every redraw.
"""

from __future__ import annotations

import os
import time

MISSING = ("no Chromium-based browser found for PNG/SVG/PDF export: run `python scripts/install_browser.py` "
           "(or apt-get install chromium); HTML and CSV export work without it")
_TTL_S = 30.0
_cache: tuple[float, str | None] | None = None


def browser_path(*, fresh: bool = False) -> str | None:
    """The executable kaleido would start, or None when there is none (cached for 30 s)."""
    global _cache
    now = time.monotonic()
    if not fresh and _cache is not None and now - _cache[0] < _TTL_S:
        return _cache[1]
    from choreographer.browsers.chromium import Chromium

    path = Chromium.find_browser(skip_local=False)
    found = path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None
    _cache = (now, found)
    return found
