"""Job statuses: monotonic transitions, progress (pure); providers' words are in test_providers."""

from __future__ import annotations

import itertools
import math

import pytest

from service import jobs
from service.jobs import Status

ORDER = ["submitting", "queued", "processing"]
TERMINALS = {Status.SUCCEEDED, Status.FAILED, Status.CANCELED}


def expected_advance(old: Status, new: Status) -> bool:
    """The rule, written independently: forward along the chain, and terminal is final."""
    if old in TERMINALS:
        return False
    if new in TERMINALS:
        return True
    return ORDER.index(new.value) > ORDER.index(old.value)


@pytest.mark.parametrize(
    ("old", "new"),
    [pytest.param(a, b, id=f"{a}->{b}") for a, b in itertools.product(Status, repeat=2)],
)
def test_advance_table(old: Status, new: Status) -> None:
    assert jobs.advance(old, new) is expected_advance(old, new)


def test_advance_spot_checks() -> None:
    assert jobs.advance(Status.SUBMITTING, Status.QUEUED)
    assert jobs.advance(Status.SUBMITTING, Status.SUCCEEDED)  # a fast job may skip states
    assert jobs.advance(Status.QUEUED, Status.PROCESSING)
    assert not jobs.advance(Status.PROCESSING, Status.QUEUED)  # late report
    assert not jobs.advance(Status.PROCESSING, Status.PROCESSING)  # duplicate
    assert not jobs.advance(Status.SUCCEEDED, Status.FAILED)
    assert not jobs.advance(Status.FAILED, Status.SUCCEEDED)


@pytest.mark.parametrize("terminal", sorted(TERMINALS))
def test_terminal_never_moves(terminal: Status) -> None:
    assert terminal.terminal
    assert not any(jobs.advance(terminal, new) for new in Status)


def test_terminal_property_and_rank() -> None:
    assert {s for s in Status if s.terminal} == TERMINALS
    assert Status.SUBMITTING.rank < Status.QUEUED.rank < Status.PROCESSING.rank
    assert {s.rank for s in TERMINALS} == {Status.PROCESSING.rank + 1}


def test_advance_never_cycles() -> None:
    # Forward moves chain at most submitting -> queued -> processing -> terminal: 3 moves.
    for path in itertools.product(Status, repeat=5):
        if all(jobs.advance(a, b) for a, b in itertools.pairwise(path)):
            pytest.fail(f"4 forward moves in a row: {path}")


# -- progress ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (0.0, 0.05, False),
        (0.0, 0.1, True),
        (0.0, 0.3, True),
        (0.31, 0.39, False),
        (0.39, 0.4, True),
        (0.5, 0.5, False),
        (0.6, 0.5, False),  # backwards
        (0.95, 0.99, False),
        (0.95, 1.0, True),  # 100% always counts
        (0.99, 1.0, True),
        (1.0, 1.0, False),
        (0.0, 1.0, True),
    ],
)
def test_meaningful_progress(old: float, new: float, expected: bool) -> None:
    assert jobs.meaningful_progress(old, new) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (0.0, 0.0),
        (0.25, 0.25),
        (1, 1.0),
        (1.0, 1.0),
        (50, 0.5),  # a percentage
        (99.5, 0.995),
        (100, 1.0),
        (250, 1.0),
        (-0.5, 0.0),
        (-20, 0.0),
    ],
)
def test_clamp_progress(value: float, expected: float) -> None:
    result = jobs.clamp_progress(value)
    assert result is not None
    assert result == pytest.approx(expected)
    assert 0.0 <= result <= 1.0


@pytest.mark.parametrize("value", [True, False, None, "0.5", "50", [0.5], {"p": 1}, math.nan])
def test_clamp_progress_refuses_non_numbers(value: object) -> None:
    assert jobs.clamp_progress(value) is None


def test_clamp_progress_infinity_stays_in_range() -> None:
    assert jobs.clamp_progress(math.inf) == 1.0
    assert jobs.clamp_progress(-math.inf) == 0.0


def test_clamp_progress_huge_integer_does_not_raise() -> None:
    result = jobs.clamp_progress(10**400)
    assert result is None or 0.0 <= result <= 1.0
