"""Projection methods and their parameters: defaults, validation and the cache-key hash.

Kept apart from the computations so the service, the page and export can validate a request
without importing any numerical library."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

METHODS = ("pca", "umap", "tsne")
TRUST_K = 10
TRUST_MAX_POINTS = 2000

# Defaults of each method's parameters; ``normalize_params`` fills them in, so ``{}`` and the
# explicit defaults share one cache entry.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "pca": {},
    "umap": {"n_neighbors": 15, "min_dist": 0.1, "seed": 0, "pca_dims": 50, "warm_epochs": 150},
    "tsne": {"perplexity": 30.0, "seed": 0, "pca_dims": 50, "warm_iters": 250, "backend": "auto"},
}
_PARAM_TYPES: dict[str, Callable[[Any], Any]] = {
    "n_neighbors": int, "min_dist": float, "seed": int, "pca_dims": int, "warm_epochs": int,
    "perplexity": float, "warm_iters": int, "backend": str,
}
TSNE_BACKENDS = ("auto", "opentsne", "sklearn")




def normalize_params(method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``params`` with defaults filled in and types coerced; ValueError names a bad key or value."""
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    defaults = DEFAULT_PARAMS[method]
    out = dict(defaults)
    for key, value in (params or {}).items():
        if key not in defaults:
            allowed = ", ".join(defaults) or "none"
            raise ValueError(f"{method} params: unknown key {key!r} (allowed: {allowed})")
        try:
            out[key] = _PARAM_TYPES[key](value)
        except (TypeError, ValueError):
            raise ValueError(f"{method} params: {key}={value!r} is not a valid {_PARAM_TYPES[key].__name__}") from None
    checks = {
        "n_neighbors": lambda v: v >= 2, "min_dist": lambda v: 0 <= v <= 10, "pca_dims": lambda v: v == 0 or v >= 2,
        "warm_epochs": lambda v: v >= 1, "warm_iters": lambda v: v >= 1, "perplexity": lambda v: v > 0,
        "seed": lambda v: v >= 0, "backend": lambda v: v in TSNE_BACKENDS,
    }
    for key, value in out.items():
        if not checks[key](value):
            raise ValueError(f"{method} params: {key}={value!r} is out of range")
    return out


def params_key(method: str, params: Mapping[str, Any] | None = None) -> str:
    """Short stable hash of the normalised parameters (part of the cache key and file name)."""
    norm = normalize_params(method, params)
    blob = json.dumps({"method": method, **norm}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:12]

