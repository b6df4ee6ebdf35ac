"""The app's training worker never leaves a job hanging: whatever escapes the trainer (here the store
refusing to create the run) ends the job ``failed`` with a one-line reason and a logged traceback."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from engine.cli import load_run_config
from engine.jobs import Job


class BrokenStore:
    """Stands in for a store whose disk went away between the page opening and Start."""

    def create_run(self, *args: Any, **kwargs: Any) -> str:
        raise OSError(5, "Input/output error\nwith a second line")


def test_an_error_escaping_the_trainer_fails_the_job(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="engine.jobs")
    cfg = load_run_config("grokking-quadratic", None, ["train.steps=5"])
    job = Job(cfg, store=BrokenStore()).start()  # type: ignore[arg-type]
    job._thread.join(30)
    assert not job._thread.is_alive()
    view = job.view()
    assert view.state == "failed" and job.done
    assert view.message == "OSError: [Errno 5] Input/output error"  # first line only
    assert any(r.exc_info and "training worker" in r.getMessage() for r in caplog.records)


def test_steps_per_second_stops_at_the_end_of_the_run() -> None:
    job = Job(load_run_config("noisy-labels", None, ["train.steps=20"])).start()
    job._thread.join(60)
    assert job.done
    first = job.view().steps_per_s
    time.sleep(0.3)
    assert first > 0 and job.view().steps_per_s == first  # not divided by the time since the run ended
