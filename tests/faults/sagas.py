"""The order saga as the fault suite runs it: patient enough to outlive every injected fault
(a broker restart, a database restart, a paused worker), so that every saga must end
completed or compensated."""

from __future__ import annotations

import dataclasses

from orchestrator.saga.definition import RetryPolicy
from orchestrator.sagas import order

CHAOS = dataclasses.replace(
    order.DEFINITION,
    name="order_chaos",
    version=1,
    steps=tuple(
        dataclasses.replace(
            step,
            timeout_s=15.0,
            retry=RetryPolicy(max_attempts=10, initial_backoff_s=1, max_backoff_s=5),
            compensation_timeout_s=15.0,
            compensation_retry=RetryPolicy(max_attempts=100, initial_backoff_s=1, max_backoff_s=5),
        )
        for step in order.DEFINITION.steps
    ),
)
# the courier's slow first answer (11 s) must outlast the shipment's deadline
CHAOS = dataclasses.replace(
    CHAOS, steps=(*CHAOS.steps[:2], dataclasses.replace(CHAOS.steps[2], timeout_s=10.0))
)

DEFINITIONS = (CHAOS,)
