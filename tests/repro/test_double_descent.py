"""double-descent (Belkin et al. 2019) through the CLI: the min-norm test-error peak at N ≈ n and ridge.

The preset is an exact solve (``lstsq_readout``), so each run is deterministic: single seed
(the preset's seed 0), n = 300 digits. Measured on this machine (torch 2.13 CPU); the values of
seeds 1 and 2 are in the preset card. ≈ 0.1 s CPU per run after imports.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.repro


def _test_err(run_preset, *sets: str) -> tuple[float, float]:
    _, h = run_preset("double-descent", *sets)
    return 1.0 - h.last("test/acc"), h.last("readout/cond")


def test_min_norm_test_error_peaks_at_the_interpolation_threshold_with_label_noise(run_preset) -> None:
    err = {}
    cond = {}
    for width in (100, 250, 300, 320, 350, 400, 700, 4000):
        err[width], cond[width] = _test_err(run_preset, f"model.width={width}")
    peak = (err[300] + err[320] + err[350]) / 3                   # N ∈ [n, 1.2n]
    assert peak >= 0.6                                            # measured 0.664 / 0.700 / 0.760: mean 0.71
    assert err[100] <= 0.3                                        # measured 0.197 (N = n/3)
    assert err[4000] <= 0.3                                       # measured 0.194 (N = 13n)
    assert err[700] < err[400] < err[350]                         # measured 0.297 < 0.662 < 0.760
    assert max(cond, key=cond.__getitem__) in (250, 300, 320, 350)  # measured 300: cond 1.6e5
    assert cond[300] >= 10 * cond[100] and cond[300] >= 100 * cond[4000]  # measured 1.6e5 vs 5.0e3, 6.0e2


def test_without_label_noise_the_peak_is_lower_but_still_there(run_preset) -> None:
    narrow, _ = _test_err(run_preset, "data.noise=0", "model.width=100")
    peak, _ = _test_err(run_preset, "data.noise=0")
    wide, _ = _test_err(run_preset, "data.noise=0", "model.width=4000")
    assert peak >= 0.3                                            # measured 0.489 (N = 350)
    assert peak >= narrow + 0.2 and peak >= wide + 0.3            # measured 0.123 (N = 100), 0.046 (N = 4000)


def test_ridge_removes_the_peak(run_preset) -> None:
    min_norm, _ = _test_err(run_preset)
    ridge, _ = _test_err(run_preset, "regularizers.lstsq_readout.ridge=0.1")
    assert min_norm - ridge >= 0.4                                # measured 0.760 → 0.164 (seeds 1, 2: −0.62, −0.53)
    ridge_at_n, _ = _test_err(run_preset, "model.width=300", "regularizers.lstsq_readout.ridge=0.1")
    assert ridge_at_n <= 0.3                                      # measured 0.176
