"""Every metric a run can record, with a human label, unit, panel and one-line meaning.

Three sources declare metrics, so a page can draw any run without naming a single metric:

- the trainer's own evaluation metrics (losses, accuracies, R², weight norms, …) and the continual
  task metrics, declared here (``TRAINER_METRICS``), because the trainer is not a plugin;
- each instrument in ``engine/diagnostics/`` declares its ``outputs``, ``panels`` and ``artifacts``;
- techniques log ``reg/<name>`` (their penalty term) and their own ``group/name`` scalars
  (``ssl/*``, ``coteach/*``, …). Techniques declare no metric list, so they get a generic label
  built from the metric's name, under a panel named after the technique with its one-line summary:
  ``reg/<name>`` names its technique; any other undeclared metric is attributed to the run's enabled
  technique that reports scalars and whose name or group matches the metric's group.

``declare`` answers for one metric name; a metric none of these explains is *undeclared*
(``None``): the page still draws it under "Other metrics", and a test fails on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from engine.diagnostics import MetricSpec, PanelSpec, all_diagnostics

TRAINING, INSTRUMENTS, TECHNIQUES, OTHER = "Training", "Instruments", "Techniques", "Other metrics"
SECTIONS = (TRAINING, INSTRUMENTS, TECHNIQUES, OTHER)

TRAINER_PANELS = (
    PanelSpec("loss", "Loss", "loss (data objective)", log_y=True,
              note="Training loss on the mini-batch (every logged step) and on the full training and test sets "
                   "(every evaluation); the total adds the techniques' penalties."),
    PanelSpec("accuracy", "Accuracy", "fraction correct",
              note="With label noise, clean-label accuracy is the fit that matters, and memorised = noisy "
                   "examples predicted with their wrong given label."),
    PanelSpec("r2", "R² (1 − fraction of variance unexplained)", "R²"),
    PanelSpec("gap", "Generalisation gap", "train − test accuracy"),
    PanelSpec("weights", "Weights: norm and distance travelled", "L2 norm"),
    PanelSpec("update", "Size of one update ‖θ_t − θ_(t−1)‖", "L2 norm", log_y=True),
    PanelSpec("lr", "Learning rate", "η"),
    PanelSpec("grad_norm", "Gradient norm (before clipping)", "L2 norm", log_y=True),
    PanelSpec("task_acc", "Continual learning: accuracy at the end of each task", "fraction correct"),
    PanelSpec("task_sigma", "Continual learning: largest singular value per layer", "σ_max"),
)

TRAINER_METRICS = (
    MetricSpec("train/loss", "train loss (mini-batch)", "loss", "loss", "data loss of the last mini-batch"),
    MetricSpec("train/loss_full", "train loss (full set)", "loss", "loss", "data loss over the whole training set"),
    MetricSpec("train/total_loss", "train loss + penalties", "loss", "loss",
               "the optimised objective: data loss plus every technique's extra loss"),
    MetricSpec("test/loss", "test loss", "loss", "loss", "data loss on the held-out test set"),
    MetricSpec("train/acc", "train accuracy (given labels)", "fraction", "accuracy",
               "accuracy on the training set against the labels the model was given"),
    MetricSpec("test/acc", "test accuracy", "fraction", "accuracy", "accuracy on the held-out test set"),
    MetricSpec("train/acc_clean", "train accuracy, clean labels", "fraction", "accuracy",
               "accuracy on the training examples whose label was not corrupted"),
    MetricSpec("train/acc_noisy", "noisy examples: true label recovered", "fraction", "accuracy",
               "share of corrupted examples predicted with their true label"),
    MetricSpec("noisy/memorized_frac", "noisy examples memorised", "fraction", "accuracy",
               "share of corrupted examples predicted with their wrong given label"),
    MetricSpec("train/acc_labeled", "train accuracy, labelled subset", "fraction", "accuracy",
               "accuracy on the few labelled training examples of a semi-supervised run"),
    MetricSpec("train/r2", "train R²", "R²", "r2", "1 − FVU on the training set (1 = perfect fit)"),
    MetricSpec("test/r2", "test R²", "R²", "r2", "1 − FVU on the test set"),
    MetricSpec("gap/train_test", "train − test accuracy", "fraction", "gap",
               "generalisation gap in accuracy (positive = overfitting)"),
    MetricSpec("weights/norm", "weight norm ‖θ‖", "L2 norm", "weights", "L2 norm of all trainable weights"),
    MetricSpec("weights/dist_init", "distance from init ‖θ − θ₀‖", "L2 norm", "weights",
               "how far the weights have moved from their initial values"),
    MetricSpec("update/size", "update size ‖Δθ‖", "L2 norm", "update",
               "L2 norm of the last optimizer step (learning rate × direction)"),
    MetricSpec("lr", "learning rate η", "η", "lr", "learning rate after the schedule, at each logged step"),
    MetricSpec("grad/norm", "gradient norm", "L2 norm", "grad_norm",
               "L2 norm of the raw gradient of the loss, before any clipping or noise"),
    MetricSpec("task/end_acc", "accuracy at the end of the task", "fraction", "task_acc",
               "training accuracy on the current task just before the labels change"),
    MetricSpec("task/index", "task number", "", "task_acc", "which task just ended (0 = first)", role="flag"),
    MetricSpec("task/sigma_max", "σ_max, largest over layers", "σ_max", "task_sigma",
               "largest singular value of any weight matrix at the end of a task"),
    MetricSpec("task/sigma_max_l{i}", "σ_max, layer {i}", "σ_max", "task_sigma",
               "largest singular value of weight matrix {i} at the end of a task"),
)


@dataclass(frozen=True)
class Declared:
    """One recorded metric resolved to its declaration: concrete name and label, panel and origin.

    ``source`` says who declared it (``trainer``, ``instrument sharpness``, ``technique elr``);
    ``index`` is the ``{i}`` value of an indexed family (``sharpness/eig_3`` → 3), else None.
    """

    spec: MetricSpec
    panel: PanelSpec
    section: str
    source: str
    index: int | None = None


def _resolve(metric: str, specs: Sequence[MetricSpec], panels: Sequence[PanelSpec], section: str, source: str,
             prefix: str = "") -> Declared | None:
    by_key = {p.key: p for p in panels}
    for spec in specs:
        found = spec.matches(metric)
        if found is None:
            continue
        concrete = replace(spec, name=metric, label=spec.label.replace("{i}", found),
                           meaning=spec.meaning.replace("{i}", found))
        panel = by_key.get(spec.panel) or PanelSpec(spec.panel or metric, spec.panel or spec.label)
        panel = replace(panel, key=prefix + panel.key)
        return Declared(concrete, panel, section, source, int(found) if found else None)
    return None


def humanize(leaf: str) -> str:
    """A readable label from a metric's last part: ``pseudo_acc_all`` → "pseudo-label accuracy (all rows)"."""
    words = {"acc": "accuracy", "frac": "fraction", "lr": "learning rate", "R": "rate R", "pseudo": "pseudo-label",
             "all": "(all rows)", "disagree": "disagreement", "cond": "condition number", "std": "std"}
    return " ".join(words.get(w, w) for w in leaf.split("_") if w) or leaf


def _technique_of(metric: str, techniques: Iterable[str]) -> str | None:
    """The enabled technique that reports ``metric``: ``reg/<name>`` names it; otherwise the only
    technique reporting scalars whose name or group matches the metric's group (or the only one)."""
    from engine.regularizers import all_techniques

    known = all_techniques()
    group, _, leaf = metric.partition("/")
    if group == "reg" and leaf in known:
        return leaf
    reporters = [t for t in techniques if t in known
                 and (known[t].overrides("metrics") or known[t].overrides("after_backward"))]
    if not leaf or not reporters:
        return None

    def fits(name: str) -> bool:
        return (group == known[name].group or group in name or name.startswith(group)
                or (len(group) >= 5 and name.startswith(group[:5])))

    fitting = [t for t in reporters if fits(t)]
    if len(fitting) > 1:  # e.g. grad/noise_std with grad_clip and grad_noise on: the leaf decides
        fitting = [t for t in fitting if any(w.startswith(part) or part.startswith(w) for w in leaf.split("_")
                                             for part in t.split("_") if len(w) > 2 and len(part) > 2)] or fitting
    if len(fitting) == 1:
        return fitting[0]
    return reporters[0] if len(reporters) == 1 else None


def _technique_metric(metric: str, technique: str) -> Declared:
    from engine.regularizers import all_techniques

    cls = all_techniques()[technique]
    group, _, leaf = metric.partition("/")
    label = "penalty added to the loss" if group == "reg" else humanize(leaf)
    title = f"Technique: {technique.replace('_', ' ')}"
    panel = PanelSpec(f"technique:{technique}", title, "value", note=cls.summary())
    spec = MetricSpec(metric, label, "", panel.key, f"reported by {technique}: {cls.summary()}")
    return Declared(spec, panel, TECHNIQUES, f"technique {technique}")


def declare(metric: str, techniques: Iterable[str] = ()) -> Declared | None:
    """The declaration of a recorded metric; ``techniques`` = the run's enabled techniques.

    Trainer declarations first, then every instrument's (in registry order), then techniques.
    """
    found = _resolve(metric, TRAINER_METRICS, TRAINER_PANELS, TRAINING, "trainer")
    if found is not None:
        return found
    for name, cls in all_diagnostics().items():
        found = _resolve(metric, cls.outputs, cls.panels, INSTRUMENTS, f"instrument {name}", prefix=f"{name}:")
        if found is not None:
            return found
    technique = _technique_of(metric, techniques)
    return None if technique is None else _technique_metric(metric, technique)


def undeclared(metric: str) -> Declared:
    """A readable stand-in for a metric nobody declared, panelled with the others of its group."""
    group, _, leaf = metric.partition("/")
    panel = PanelSpec(f"other:{group}", f"Other metrics: {group}", "value")
    return Declared(MetricSpec(metric, humanize(leaf or group), "", panel.key, ""), panel, OTHER, "undeclared")
