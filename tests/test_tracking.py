"""The Tracker / Run protocols of tracking.py are what both implementations offer, name for name."""
from __future__ import annotations

import inspect

import pytest

from electra_bench import tracking

PAIRS = [(tracking.Tracker, tracking.NullTracker), (tracking.Tracker, tracking.MlflowTracker),
         (tracking.Run, tracking.NullRun), (tracking.Run, tracking.MlflowRun)]


@pytest.mark.parametrize("protocol, impl", PAIRS, ids=lambda x: x.__name__)
def test_implementations_match_the_protocol(protocol, impl):
    methods = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    assert methods, protocol
    for name in methods:
        want = list(inspect.signature(getattr(protocol, name)).parameters)
        assert list(inspect.signature(getattr(impl, name)).parameters) == want, (impl.__name__, name)


def test_the_null_tracker_is_a_tracker(tmp_path):
    tracker = tracking.make_tracker(None, "x", False, tmp_path)
    assert isinstance(tracker, tracking.Tracker)
    with tracker.run("suite/x", "suite:x", "suite") as run:
        assert isinstance(run, tracking.Run) and run.id is None
    assert not tracker.finished("suite:x")
