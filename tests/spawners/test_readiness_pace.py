"""How often a starting server is probed (``courtyard.readiness.next_delay``): soon after it
answers while few servers start, and never so often that many starting at once are probed
to death."""

from __future__ import annotations

from itertools import pairwise

from courtyard.readiness import (
    CHECKED_AT_ONCE,
    LATEST,
    POLL_WHILE_CHECKING,
    POLLS_PER_SECOND,
    next_delay,
    poll_interval,
)


def schedule(waited_until: float, checking: int) -> list[float]:
    """The delays between probes of one server that never answers, until ``waited_until``."""
    delays, delay, waited = [], 0.01, 0.0
    while waited < waited_until:
        delays.append(delay)
        waited += delay
        delay = next_delay(delay, waited, checking)
    return delays


def test_a_server_that_answers_is_probed_within_a_quarter_second_while_few_start():
    # 20 s into a slow start (a Slurm job, a pod pulling its image), the wait between
    # probes is still a quarter of a second: the server is seen at most that late
    delays = schedule(60.0, checking=20)
    assert delays[0] == 0.01
    assert max(delays) == LATEST == 0.25
    assert delays[-1] == LATEST


def test_the_first_probes_come_quickly_and_back_off():
    delays = schedule(1.0, checking=1)
    assert delays[:3] == [0.01, 0.015, 0.0225]
    assert all(b >= a for a, b in pairwise(delays))
    assert max(delays) <= 0.1  # a twentieth of a second waited, but at least 100 ms


def test_many_servers_starting_at_once_share_a_bounded_probe_rate():
    for checking in (CHECKED_AT_ONCE * 2, CHECKED_AT_ONCE * 10):
        latest = schedule(600.0, checking)[-1]
        # every server's probes together stay at CHECKED_AT_ONCE / LATEST a second
        assert checking / latest == CHECKED_AT_ONCE / LATEST


def test_whether_a_starting_server_exited_is_asked_at_a_bounded_rate():
    # few starting: each is polled once a second (a server that died is seen that soon)
    assert [poll_interval(n) for n in (1, 2, 4)] == [POLL_WHILE_CHECKING] * 3 == [1.0] * 3
    # 20 containers starting: each every 5 s, 4 engine queries a second in all, not 20
    assert poll_interval(20) == 5.0
    for checking in (8, 20, 100):
        assert checking / poll_interval(checking) == POLLS_PER_SECOND
