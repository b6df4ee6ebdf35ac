"""Neural collapse NC1–NC4 of the penultimate features.

Papyan, Han & Donoho 2020, *Prevalence of neural collapse during the terminal phase of deep
learning training*. Definitions vary between papers and libraries, so the lab
fixes one convention and every panel, export and test uses it:

- μ_c class means, **μ_G = mean of the class means**, M̃ = [μ_c − μ_G]_c, W ∈ ℝ^{C×d}, b ∈ ℝ^C;
- Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ, Σ_B = (1/C) Σ_c μ̃_c μ̃_cᵀ;
- **NC1** = Tr(Σ_W Σ_B⁺)/C, Σ_B⁺ the pseudo-inverse of rank r = min(d, C − 1) from ``eigh``
  (top r eigenpairs, and only those > 1e-12 · the largest);
- NC2: ``equinorm`` = std/mean of ‖μ̃_c‖ (ddof 1), same for the rows of W (``equinorm_w``);
  ``equiangular`` = std over pairs c < c′ of cos(μ̃_c, μ̃_c′) (ddof 1); ``max_angle`` = mean over
  c ≠ c′ of |cos + 1/(C − 1)|;
- **NC3** = ‖W/‖W‖_F − M̃ᵀ/‖M̃‖_F‖_F² (squared);
- **NC4** = fraction of samples with argmax_c (W h + b)_c ≠ argmin_c ‖h − μ_c‖ (bias included).

All → 0 under exact collapse (class means on a simplex ETF, no within-class spread, W ∝ M̃ᵀ).
Computed in float64; only the classes present in the probe set count (C = their number).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from engine.diagnostics.base import Diagnostic, DiagnosticContext, Measurement, MetricSpec, PanelSpec, register
from engine.diagnostics.representation import eval_mode

EIG_RTOL = 1e-12  # eigenvalues of Σ_B below this fraction of the largest are treated as 0


# ---- the classifier ------------------------------------------------------------------------

@contextmanager
def _recording_linears(model: nn.Module) -> Iterator[list[nn.Linear]]:
    """Collect, in call order, every ``nn.Linear`` of ``model`` that runs inside the block."""
    called: list[nn.Linear] = []
    handles = [m.register_forward_hook(lambda mod, _in, _out: called.append(mod))
               for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        yield called
    finally:
        for h in handles:
            h.remove()


def classifier_of(model: nn.Module, feature_dim: int) -> nn.Linear | None:
    """The final Linear layer mapping the penultimate features to the outputs, or None.

    For a ``LabModel`` (has ``head``) the head is run once on zeros, in eval mode and without
    gradients, and the last ``nn.Linear`` it calls with ``in_features == feature_dim`` is the
    classifier. This is robust to models whose width-to-width hidden layers also take
    ``feature_dim`` inputs, and it correctly finds none for a head that is a bare matrix product
    (the transformer's W_U), where NC3/NC4 are then omitted. Plain modules without ``head`` fall
    back to the last registered ``nn.Linear`` with ``in_features == feature_dim``.
    """
    head = getattr(model, "head", None)
    if head is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.in_features == feature_dim]
        return linears[-1] if linears else None
    param = next(model.parameters(), None)
    zeros = torch.zeros(1, feature_dim, dtype=param.dtype if param is not None else torch.float32,
                        device=param.device if param is not None else None)
    with eval_mode(model), torch.no_grad(), _recording_linears(model) as called:
        head(zeros)
    candidates = [m for m in called if m.in_features == feature_dim]
    return candidates[-1] if candidates else None


# ---- the metrics ---------------------------------------------------------------------------

def _class_means(h: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(present classes, their means (C×d), index of each sample's class among them)."""
    classes, position = torch.unique(labels, return_inverse=True)
    counts = torch.bincount(position, minlength=len(classes)).to(h.dtype)
    sums = torch.zeros(len(classes), h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, position, h)
    return classes, sums / counts[:, None], position


def between_class_eig(centered_means: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenpairs (λ, U) of Σ_B = M̃ᵀM̃/C kept for its rank-min(d, C − 1) pseudo-inverse.

    ``eigh`` runs on the smaller of the d×d matrix Σ_B and the C×C Gram M̃M̃ᵀ/C (same non-zero
    eigenvalues; u = M̃ᵀv/√(Cλ) maps Gram eigenvectors to Σ_B's). Keeps the top
    r = min(d, C − 1) pairs and, of those, only λ > 1e-12 · λ_max — the rank clamp that one
    library gets wrong for d < C − 1. Returns λ (r′,) and U (d×r′).
    """
    c, d = centered_means.shape
    rank = min(d, c - 1)
    if d <= c:
        lam, u = torch.linalg.eigh(centered_means.T @ centered_means / c)
    else:
        lam, v = torch.linalg.eigh(centered_means @ centered_means.T / c)
        u = centered_means.T @ v / torch.sqrt((c * lam).clamp_min(torch.finfo(lam.dtype).tiny))
    lam, u = lam.flip(0)[:rank], u.flip(1)[:, :rank]  # eigh is ascending
    if lam.numel() == 0 or lam[0] <= 0:
        return lam[:0], u[:, :0]
    keep = lam > EIG_RTOL * lam[0]
    return lam[keep], u[:, keep]


def nc1(h: Tensor, means: Tensor, position: Tensor) -> float | None:
    """Tr(Σ_W Σ_B⁺)/C, via Σ_k u_kᵀ Σ_W u_k / λ_k (no d×d Σ_W needed). None if Σ_B = 0."""
    c = means.shape[0]
    centered_means = means - means.mean(0)
    lam, u = between_class_eig(centered_means)
    if lam.numel() == 0:
        return None
    within = h - means[position]  # N×d, rows h_i − μ_{y_i}
    projected_var = (within @ u).pow(2).sum(0) / h.shape[0]  # u_kᵀ Σ_W u_k
    return float((projected_var / lam).sum() / c)


def _cv(values: Tensor) -> float | None:
    """Coefficient of variation std/mean with ddof 1 (None when undefined)."""
    mean = values.mean()
    if values.numel() < 2 or mean <= 0:
        return None
    return float(values.std(unbiased=True) / mean)


def nc2(centered_means: Tensor) -> dict[str, float]:
    """Equinorm, equiangularity and max-angle of the centred class means (NC2)."""
    c = centered_means.shape[0]
    norms = centered_means.norm(dim=1)
    out: dict[str, float] = {}
    equinorm = _cv(norms)
    if equinorm is not None:
        out["nc/equinorm"] = equinorm
    if (norms <= 0).any():
        return out
    unit = centered_means / norms[:, None]
    cos = unit @ unit.T
    i, j = torch.triu_indices(c, c, offset=1)
    pairs = cos[i, j]
    # one pair (C = 2) is trivially equiangular: the ddof-1 std of a single value would be NaN
    out["nc/equiangular"] = float(pairs.std(unbiased=True)) if pairs.numel() > 1 else 0.0
    out["nc/max_angle"] = float((pairs + 1.0 / (c - 1)).abs().mean())  # symmetric: pairs c<c′ = all c≠c′
    return out


def nc3(w: Tensor, centered_means: Tensor) -> float | None:
    """‖W/‖W‖_F − M̃ᵀ/‖M̃‖_F‖_F², squared (W and M̃ᵀ both C×d here)."""
    w_norm, m_norm = w.norm(), centered_means.norm()
    if w_norm <= 0 or m_norm <= 0:
        return None
    return float((w / w_norm - centered_means / m_norm).pow(2).sum())


def nc4(h: Tensor, means: Tensor, classes: Tensor, w: Tensor, b: Tensor) -> float:
    """Mismatch rate of the classifier (argmax W h + b, all outputs) and the nearest class mean."""
    predicted = (h @ w.T + b).argmax(1)
    nearest = classes[torch.cdist(h, means).argmin(1)]
    return float((predicted != nearest).double().mean())


def neural_collapse(features: Tensor, labels: Tensor, W: Tensor | None = None,
                    b: Tensor | None = None) -> dict[str, float]:
    """NC1–NC4 of ``features`` (N×d) with integer ``labels`` and classifier ``W`` (outputs×d), ``b``.

    Returns ``nc/nc1``, ``nc/equinorm``, ``nc/equiangular``, ``nc/max_angle`` and, when W is
    given, ``nc/equinorm_w``, ``nc/nc3``, ``nc/nc4`` (b defaults to 0). W's rows are indexed by
    class label; with fewer than two classes present the result is empty. A metric that is
    undefined (e.g. all class means equal) is omitted rather than reported as NaN.
    """
    h = features.detach().flatten(1).double()
    labels = labels.detach().long()
    classes, means, position = _class_means(h, labels)
    if len(classes) < 2:
        return {}
    centered_means = means - means.mean(0)
    out: dict[str, float] = {}
    value = nc1(h, means, position)
    if value is not None:
        out["nc/nc1"] = value
    out.update(nc2(centered_means))
    if W is None:
        return out
    w = W.detach().double()
    bias = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device) if b is None else b.detach().double()
    w_classes = w[classes]
    equinorm_w = _cv(w_classes.norm(dim=1))
    if equinorm_w is not None:
        out["nc/equinorm_w"] = equinorm_w
    value = nc3(w_classes, centered_means)
    if value is not None:
        out["nc/nc3"] = value
    out["nc/nc4"] = nc4(h, means, classes, w, bias)
    return out


# ---- the instrument ------------------------------------------------------------------------

@register
class Collapse(Diagnostic):
    """Neural collapse NC1–NC4 of the penultimate features on the training probe set (lab convention)."""

    name = "collapse"
    group = "collapse"
    every = 200
    cost = "1 forward over the probe set + eigh of C×C/d×d"
    needs = frozenset({"features"})
    tasks = ("classification",)
    default_on = True
    panels = (PanelSpec("collapse", "Neural collapse (NC1–NC4)", "distance from collapse",
                        log_y=True, note="All measures fall towards 0 as the penultimate features collapse to their "
                                         "class means on a simplex (Papyan et al. 2020)."),)
    outputs = (
        MetricSpec("nc/nc1", "NC1 within-class variability", "ratio", "collapse",
                   "Tr(Σ_W Σ_B⁺)/C: spread of features around their class mean, relative to the class means"),
        MetricSpec("nc/equinorm", "NC2 equinorm of class means", "std/mean", "collapse",
                   "coefficient of variation of the centred class-mean norms"),
        MetricSpec("nc/equinorm_w", "NC2 equinorm of classifier rows", "std/mean", "collapse",
                   "coefficient of variation of the classifier's row norms"),
        MetricSpec("nc/equiangular", "NC2 equiangularity", "cosine std", "collapse",
                   "spread of the pairwise cosines between centred class means"),
        MetricSpec("nc/max_angle", "NC2 distance from maximal angle", "cosine", "collapse",
                   "mean |cos + 1/(C−1)|: 0 when the class means form a simplex"),
        MetricSpec("nc/nc3", "NC3 classifier–mean alignment", "squared distance", "collapse",
                   "distance between the normalised classifier and the normalised class means"),
        MetricSpec("nc/nc4", "NC4 nearest-mean mismatch", "fraction", "collapse",
                   "share of samples where the classifier and the nearest class mean disagree"),
    )

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        with eval_mode(ctx.model):
            outputs, features = ctx.features()
        features = features.flatten(1)
        linear = classifier_of(ctx.model, features.shape[1])
        w = b = None
        if linear is not None and linear.out_features == outputs.shape[-1]:
            w, b = linear.weight, linear.bias
        return Measurement(metrics=neural_collapse(features, ctx.probe_y, w, b))
