"""Where a saga's time goes, from the timestamps its messages carry.

Every envelope has the time it was decided (`timestamp`); every Kafka record has the time its
producer sent it. Chained by `causationId`, they split a saga into hops that add up to its
end-to-end latency:

    api        POST sent -> first command decided (request, validation, insert)
    outbox     command decided -> on Kafka (commit, outbox wait, relay, broker ack)
    participant command on Kafka -> reply decided (delivery, the participant's transaction)
    reply out  reply decided -> on Kafka (the participant's commit and publish)
    worker     reply on Kafka -> next message decided (delivery, reply handling)
    event      final event decided -> on Kafka -> read by the client
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any

from bench.load import RunResult

HOPS = ("api", "outbox", "participant", "reply out", "worker", "event")


def _ts(envelope: dict[str, Any]) -> float:
    return datetime.fromisoformat(envelope["timestamp"].replace("Z", "+00:00")).timestamp()


def per_hop_ms(result: RunResult, records: list[tuple[str, int, bytes]]) -> dict[str, float]:
    """Mean milliseconds per saga spent in each hop, over the sagas measured."""
    by_saga: dict[str, list[tuple[dict[str, Any], float]]] = defaultdict(list)
    for _topic, kafka_ms, value in records:
        try:
            envelope = json.loads(value)
        except ValueError:
            continue
        # envelopes only: a start on the ingress topic names its saga but is no envelope
        if isinstance(envelope, dict) and "sagaId" in envelope and "messageId" in envelope:
            by_saga[envelope["sagaId"]].append((envelope, kafka_ms / 1000))
    totals: dict[str, list[float]] = {hop: [] for hop in HOPS}
    for outcome in result.measured:
        seen_at = result.final_seen_at.get(outcome.saga_id)
        messages = by_saga.get(outcome.saga_id)
        if seen_at is None or not messages:
            continue
        hops = _split(outcome.posted_at, seen_at, messages)
        if hops is not None:
            for hop, seconds in hops.items():
                totals[hop].append(seconds * 1000)
    return {hop: statistics.fmean(v) if v else 0.0 for hop, v in totals.items()}


def _split(
    posted_at: float, seen_at: float, messages: list[tuple[dict[str, Any], float]]
) -> dict[str, float] | None:
    hops = dict.fromkeys(HOPS, 0.0)
    by_id = {m["messageId"]: (m, on_kafka) for m, on_kafka in messages}
    commands = [(m, k) for m, k in messages if m.get("kind") == "command"]
    replies = [(m, k) for m, k in messages if m.get("kind") == "reply"]
    finals = [
        (m, k)
        for m, k in messages
        if m.get("kind") == "event" and m["messageType"] != "saga.started"
    ]
    if not commands or not finals:
        return None
    first = min(commands, key=lambda mk: _ts(mk[0]))
    hops["api"] = _ts(first[0]) - posted_at
    for command, on_kafka in commands:
        hops["outbox"] += on_kafka - _ts(command)
    for reply, on_kafka in replies:
        command_on_kafka = by_id.get(reply.get("causationId", ""), (None, None))[1]
        if command_on_kafka is not None:
            hops["participant"] += _ts(reply) - command_on_kafka
        hops["reply out"] += on_kafka - _ts(reply)
    replies_on_kafka = {m["messageId"]: k for m, k in replies}
    for message, _ in [*commands, *finals]:
        reply_on_kafka = replies_on_kafka.get(message.get("causationId", ""))
        if reply_on_kafka is not None:
            hops["worker"] += _ts(message) - reply_on_kafka
    final, _ = finals[-1]
    hops["event"] = seen_at - _ts(final)
    return hops


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]
