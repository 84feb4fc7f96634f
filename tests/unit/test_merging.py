"""Batches handed in side by side share calls, and no batch pays for another's error or
slowness beyond the call it shared."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.group_commit import Merging


class Recorder:
    def __init__(self, poison: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.poison = poison
        self.release = asyncio.Event()
        self.release.set()

    async def handle_many(self, items: list[str]) -> None:
        self.calls.append(list(items))
        await self.release.wait()
        if self.poison in items:
            raise ValueError(f"cannot handle {self.poison}")


async def test_batches_that_wait_for_a_slot_share_the_next_call() -> None:
    recorder = Recorder()
    recorder.release.clear()
    handle = Merging(recorder.handle_many, slots=1)
    first = asyncio.create_task(handle(["a1"]))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(handle([f"{lane}1", f"{lane}2"])) for lane in "bcd"]
    await asyncio.sleep(0)
    recorder.release.set()
    await asyncio.gather(first, *waiting)
    assert recorder.calls == [["a1"], ["b1", "b2", "c1", "c2", "d1", "d2"]]


async def test_a_failing_batch_fails_alone_and_the_others_are_handled() -> None:
    recorder = Recorder(poison="c1")
    recorder.release.clear()
    handle = Merging(recorder.handle_many, slots=1)
    first = asyncio.create_task(handle(["a1"]))
    await asyncio.sleep(0)
    b, c, d = (asyncio.create_task(handle([f"{lane}1"])) for lane in "bcd")
    await asyncio.sleep(0)
    recorder.release.set()
    await asyncio.gather(first, b, d)
    with pytest.raises(ValueError, match="cannot handle c1"):
        await c
    assert recorder.calls == [["a1"], ["b1", "c1", "d1"], ["b1"], ["c1"], ["d1"]]


async def test_a_slow_call_holds_up_only_the_batches_in_it() -> None:
    slow = asyncio.Event()
    handled: list[str] = []

    async def handle_many(items: list[str]) -> None:
        if "slow" in items:
            await slow.wait()
        handled.extend(items)

    handle = Merging(handle_many, slots=2)
    held = asyncio.create_task(handle(["slow"]))
    await asyncio.sleep(0)
    for lane in range(5):
        await asyncio.wait_for(handle([f"fast{lane}"]), timeout=1)
    assert handled == [f"fast{lane}" for lane in range(5)]
    slow.set()
    await held
    assert handled[-1] == "slow"


async def test_one_call_takes_at_most_max_items() -> None:
    recorder = Recorder()
    recorder.release.clear()
    handle = Merging(recorder.handle_many, slots=1, max_items=4)
    first = asyncio.create_task(handle(["a"]))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(handle([f"{lane}1", f"{lane}2"])) for lane in "bcd"]
    await asyncio.sleep(0)
    recorder.release.set()
    await asyncio.gather(first, *waiting)
    assert recorder.calls == [["a"], ["b1", "b2", "c1", "c2"], ["d1", "d2"]]


async def test_each_batch_gets_its_part_of_a_shared_calls_results() -> None:
    release = asyncio.Event()

    async def handle_many(items: list[str]) -> list[str]:
        await release.wait()
        return [f"done {item}" for item in items]

    handle = Merging(handle_many, slots=1)
    first = asyncio.create_task(handle(["a1"]))
    await asyncio.sleep(0)
    b, c = (asyncio.create_task(handle([f"{lane}1", f"{lane}2"])) for lane in "bc")
    await asyncio.sleep(0)
    release.set()
    assert await first == ["done a1"]
    assert await b == ["done b1", "done b2"]
    assert await c == ["done c1", "done c2"]
