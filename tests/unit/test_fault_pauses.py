"""The fault suite charges each part of a message's wait to the fault that was the latest
one begun during that part."""

from __future__ import annotations

from tests.faults.chaos import held_by_slow, longest_waits

STARTED = [(100.0, "restart PostgreSQL"), (140.0, "SIGSTOP worker")]


def test_a_wait_within_one_fault_is_that_faults() -> None:
    # nothing was applied after the worker was stopped: that fault measured nothing
    assert longest_waits([(101.0, 134.0, "worker")], STARTED) == {"restart PostgreSQL": 33.0}


def test_a_wait_across_the_next_faults_beginning_is_split_between_them() -> None:
    # held up by the restart, applied 6 s after the worker was stopped
    assert longest_waits([(102.0, 146.0, "worker")], STARTED) == {
        "restart PostgreSQL": 38.0,
        "SIGSTOP worker": 6.0,
    }


def test_waits_before_any_fault_count_for_none() -> None:
    assert longest_waits([(10.0, 12.0, "worker"), (99.0, 101.0, "worker")], STARTED) == {
        "restart PostgreSQL": 1.0
    }


def test_a_fault_that_stops_one_consumer_is_charged_for_its_messages_only() -> None:
    started = [(100.0, "SIGKILL worker, restart"), (120.0, "restart PostgreSQL")]
    waits = [(101.0, 112.0, "shipping"), (101.0, 104.0, "worker"), (121.0, 130.0, "shipping")]
    assert longest_waits(waits, started) == {
        "SIGKILL worker, restart": 3.0,  # the shipping command waited on something else
        "restart PostgreSQL": 9.0,  # stops every consumer
    }


def test_commands_behind_the_slow_courier_are_its_own_in_its_transaction_and_after() -> None:
    appended = {"slow": (90.0, 2), "same-batch": (91.0, 2), "next": (95.0, 2), "other": (95.0, 1)}
    shipping = [
        ("slow", "slow-saga", 100.0),  # began at 100, committed 11 s later
        ("same-batch", "s1", 100.0),
        ("next", "s2", 111.5),
        ("other", "s3", 111.5),  # another partition: not held up by it
    ]
    assert held_by_slow(shipping, appended, {"slow-saga"}) == {"slow", "same-batch", "next"}
