"""Dropout on the model's dropout slots, with constant / early / late schedules."""

from __future__ import annotations

from typing import Any

from torch import nn

from engine.regularizers._common import elapsed_steps
from engine.regularizers.base import Need, Param, Regularizer, Setup, register


@register
class Dropout(Regularizer):
    """Randomly zero hidden units (inverted dropout, h·m/(1−p)) against co-adaptation and memorization.

    *Dropout: A Simple Way to Prevent Neural Networks from Overfitting* (Srivastava et al., 2014);
    early/late schedules from *Dropout Reduces Underfitting* (Liu et al., 2023). The model owns
    the ``nn.Dropout`` modules (``model.dropout_slots``, listed input → output, the last one
    feeding the readout); this technique only sets their p. Masks are drawn by ``nn.Dropout``
    from torch's global RNG, so they follow the run seed; evaluation (``model.eval()``) is the
    identity.

    Schedules, with t_s a fraction of the run and t the number of completed updates:
    ``constant`` p throughout; ``early`` p while t < t_s·T, then 0; ``late`` 0 while t < t_s·T,
    then p. ``where``: ``hidden`` = every slot,
    ``penultimate`` = only the last slot (the others are set to 0). A live change of p takes
    effect at once.
    """

    name = "dropout"
    group = "noise"
    requires = (
        Need(why="it drives the p of the model's dropout slots",
             fix="disable dropout", model_traits=frozenset({"dropout_slots"})),
    )
    marks = frozenset({"alters_forward"})
    source = ("Dropout: A Simple Way to Prevent Neural Networks from Overfitting (Srivastava et al., 2014); "
              "Dropout Reduces Underfitting (Liu et al., 2023)")
    params = (
        Param("p", float, 0.1, 0.0, 0.9, live=True, help="drop probability of each unit"),
        Param("where", str, "hidden", choices=("hidden", "penultimate"),
              help="hidden: every dropout slot; penultimate: only the slot before the readout"),
        Param("schedule", str, "constant", choices=("constant", "early", "late"),
              help="early: p until t_s then 0; late: 0 until t_s then p"),
        Param("t_s", float, 0.2, 0.0, 1.0, help="switch point of early/late, as a fraction of the run"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        slots: list[nn.Dropout] = list(getattr(setup.model, "dropout_slots", []))
        if not slots:
            model = getattr(setup.model, "name", type(setup.model).__name__)
            raise ValueError(f"regularizers.dropout: model {model} has no dropout slots")
        self.slots = slots
        self._t = 0  # completed updates: the slots serve the first update
        self._apply()

    def p_at(self, t: int) -> float:
        """The scheduled drop probability once ``t`` updates have been completed."""
        p, schedule = self["p"], self["schedule"]
        if schedule == "constant":
            return p
        before_switch = t < self["t_s"] * self.setup.total_steps
        if schedule == "early":
            return p if before_switch else 0.0
        return 0.0 if before_switch else p

    def _apply(self) -> None:
        p = self.p_at(self._t)
        targets = self.slots if self["where"] == "hidden" else self.slots[-1:]
        for slot in self.slots:
            slot.p = p if slot in targets else 0.0

    def set(self, key: str, value: Any) -> None:
        super().set(key, value)
        self._apply()

    def after_step(self, step: int) -> None:
        self._t = elapsed_steps(step) + 1  # update ``step`` is done; the slots now serve the next one
        self._apply()
