"""The purges run in batches until done; one that fails leaves the others to run."""

from __future__ import annotations

from orchestrator.housekeeping import Housekeeping, Purge


async def test_each_purge_runs_a_batch_at_a_time_until_a_batch_is_not_full() -> None:
    left = {"a": 7, "b": 0}
    calls: list[tuple[str, int]] = []

    def purge(what: str) -> Purge:
        async def remove(limit: int) -> int:
            calls.append((what, limit))
            n = min(limit, left[what])
            left[what] -= n
            return n

        return Purge(what, remove, batch=3)

    removed = await Housekeeping([purge("a"), purge("b")], 60).once()

    assert removed == {"a": 7, "b": 0}
    assert calls == [("a", 3), ("a", 3), ("a", 3), ("b", 3)]


async def test_a_failing_purge_is_logged_and_the_next_one_runs() -> None:
    async def broken(limit: int) -> int:
        raise ConnectionError("the database is away")

    async def fine(limit: int) -> int:
        return 2

    removed = await Housekeeping([Purge("x", broken), Purge("y", fine)], 60).once()

    assert removed == {"x": 0, "y": 2}
