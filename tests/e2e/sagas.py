"""Saga definitions the system tests add through SAGA_DEFINITIONS, as a user would.

`order` version 2 is version 1 with timeouts short enough to watch them fire;
`order_parallel` charges the card and creates the shipment at the same time.
"""

from __future__ import annotations

import dataclasses

from orchestrator.saga.definition import PayloadBuilder, RetryPolicy, SagaDefinition
from orchestrator.sagas import order

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.2, max_backoff_s=1)
PATIENT_COMPENSATION = RetryPolicy(max_attempts=30, initial_backoff_s=0.5, max_backoff_s=1)


def _with(build: PayloadBuilder, **extra: object) -> PayloadBuilder:
    return lambda inp, ctx: {**build(inp, ctx), **extra}


_fast = [
    dataclasses.replace(
        step,
        timeout_s=2.0,
        retry=FAST_RETRY,
        compensation_timeout_s=2.0,
        compensation_retry=PATIENT_COMPENSATION,
    )
    for step in order.DEFINITION.steps
]
# Version 2 also sends the newer versions of two commands: payment.charge v2 (read natively
# by payment) and shipping.create v2 (read tolerantly by shipping, which knows v1 only).
ORDER_V2 = dataclasses.replace(
    order.DEFINITION,
    version=2,
    steps=(
        _fast[0],
        dataclasses.replace(
            _fast[1],
            command_version=2,
            build=_with(_fast[1].build, statementDescriptor="TEST SHOP"),
        ),
        dataclasses.replace(
            _fast[2], command_version=2, build=_with(_fast[2].build, giftWrap=True)
        ),
    ),
)

reserve, charge, ship = ORDER_V2.steps
ORDER_PARALLEL = SagaDefinition(
    name="order_parallel",
    version=1,
    validate_input=order.validate_input,
    steps=(
        reserve,
        dataclasses.replace(charge, group="pay_and_ship"),
        dataclasses.replace(ship, group="pay_and_ship"),
    ),
)


# the charge is the pivot: once the card is charged, the order only moves forward
ORDER_PIVOT = dataclasses.replace(
    ORDER_V2,
    name="order_pivot",
    version=1,
    steps=(reserve, dataclasses.replace(charge, pivot=True), ship),
)

# gives up on a compensation quickly, to leave a saga `failed` for an operator
ORDER_FRAGILE = dataclasses.replace(
    ORDER_V2,
    name="order_fragile",
    version=1,
    steps=tuple(
        dataclasses.replace(
            step,
            timeout_s=1.0,
            compensation_timeout_s=1.0,
            compensation_retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.2),
        )
        for step in ORDER_V2.steps
    ),
)

DEFINITIONS = (ORDER_V2, ORDER_PARALLEL, ORDER_PIVOT, ORDER_FRAGILE)
