"""The saga definitions this deployment runs."""

from orchestrator.saga.definition import DefinitionRegistry
from orchestrator.sagas import order

PARTICIPANTS = ("inventory", "payment", "shipping")


def default_registry() -> DefinitionRegistry:
    registry = DefinitionRegistry(participants=PARTICIPANTS)
    registry.register(order.DEFINITION)
    return registry
