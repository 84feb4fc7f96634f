"""How the relays share the outbox's shards: each shard has one relay, a relay that leaves
moves only its own shards, one that joins takes only the shards it gets, and the shares are
about even."""

from __future__ import annotations

import hashlib

import pytest

from orchestrator.ports import OUTBOX_SHARDS
from orchestrator.transport.relay import shard_owner, shard_weight, shards_of

MEMBERS = ["worker-1:41:5f0c2a1e", "worker-2:17:9b3d4470", "worker-3:8:0aa1c9e2"]


def owners(members: list[str], shards: int = OUTBOX_SHARDS) -> dict[int, str]:
    return {shard: shard_owner(shard, members) for shard in range(shards)}


@pytest.mark.parametrize("count", [1, 2, 3])
def test_every_shard_falls_to_exactly_one_member(count: int) -> None:
    members = MEMBERS[:count]
    shares = [shards_of(member, members) for member in members]

    assert sorted(shard for share in shares for shard in share) == list(range(OUTBOX_SHARDS))


def test_a_member_alone_relays_every_shard() -> None:
    assert shards_of("alone", ["alone"]) == list(range(OUTBOX_SHARDS))


def test_the_owner_does_not_depend_on_the_order_the_members_are_listed_in() -> None:
    assert owners(MEMBERS) == owners(list(reversed(MEMBERS)))


def test_when_a_member_leaves_only_its_shards_move() -> None:
    before = owners(MEMBERS, 256)
    gone = MEMBERS[1]
    after = owners([m for m in MEMBERS if m != gone], 256)

    moved = {shard for shard in before if before[shard] != after[shard]}
    assert moved == {shard for shard, owner in before.items() if owner == gone}


def test_a_member_that_joins_takes_shards_only_for_itself() -> None:
    before = owners(MEMBERS[:2], 256)
    after = owners(MEMBERS, 256)

    moved = {shard for shard in before if before[shard] != after[shard]}
    assert moved
    assert {after[shard] for shard in moved} == {MEMBERS[2]}


def test_the_shares_are_about_even() -> None:
    members = [f"worker-{i}:{1000 + i}:{i:08x}" for i in range(4)]
    shards = 4096
    fair = shards / len(members)

    shares = [len(shards_of(member, members, shards)) for member in members]

    assert sum(shares) == shards
    assert all(0.85 * fair < share < 1.15 * fair for share in shares), shares


def test_the_weight_is_a_stable_hash_the_same_in_every_process() -> None:
    expected = hashlib.blake2b(b"worker-1:7", digest_size=8).digest()

    assert shard_weight("worker-1", 7) == int.from_bytes(expected, "big")
