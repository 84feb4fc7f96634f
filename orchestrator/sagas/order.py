"""The order saga: reserve stock, charge the card, create the shipment."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any

import pydantic

from orchestrator import input_schema
from orchestrator.saga.definition import Payload, SagaDefinition, Step


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class OrderItem(_Model):
    sku: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=64)]
    quantity: Annotated[int, pydantic.Field(gt=0, le=10_000)]


class ShippingAddress(_Model):
    country: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Z]{2}$")]
    city: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)]
    line1: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=256)]
    postalCode: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=32)]


class OrderInput(_Model):
    orderId: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)]
    customerId: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)]
    items: Annotated[list[OrderItem], pydantic.Field(min_length=1, max_length=100)]
    amount: Annotated[Decimal, pydantic.Field(gt=0, max_digits=12, decimal_places=2)]
    currency: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Z]{3}$")]
    card: Annotated[
        str,
        pydantic.StringConstraints(pattern=r"^[0-9]{12,19}$"),
        input_schema.Sensitive(reader="payment"),
    ]
    shippingAddress: ShippingAddress


validate_input = input_schema.validator(OrderInput, "order")


def _reserve(inp: Mapping[str, Any], ctx: Mapping[str, Any]) -> Payload:
    return {"orderId": inp["orderId"], "items": inp["items"]}


def _release(inp: Mapping[str, Any], ctx: Mapping[str, Any]) -> Payload:
    return {"orderId": inp["orderId"], "reservationId": ctx.get("reservationId")}


def _charge(inp: Mapping[str, Any], ctx: Mapping[str, Any]) -> Payload:
    return {
        "orderId": inp["orderId"],
        "customerId": inp["customerId"],
        "amount": inp["amount"],
        "currency": inp["currency"],
        "card": inp["card"],  # sealed for payment: copied as it is
    }


def _refund(inp: Mapping[str, Any], ctx: Mapping[str, Any]) -> Payload:
    return {"orderId": inp["orderId"], "chargeId": ctx.get("chargeId"), "amount": inp["amount"]}


def _ship(inp: Mapping[str, Any], ctx: Mapping[str, Any]) -> Payload:
    return {
        "orderId": inp["orderId"],
        "items": inp["items"],
        "address": inp["shippingAddress"],
        "chargeId": ctx.get("chargeId"),
    }


def _cancel_shipment(inp: Mapping[str, Any], ctx: Mapping[str, Any]) -> Payload:
    return {"orderId": inp["orderId"], "shipmentId": ctx.get("shipmentId")}


DEFINITION = SagaDefinition(
    name="order",
    version=1,
    validate_input=validate_input,
    steps=(
        Step(
            name="reserve_inventory",
            participant="inventory",
            command="inventory.reserve",
            build=_reserve,
            compensation="inventory.release",
            build_compensation=_release,
        ),
        Step(
            name="charge_payment",
            participant="payment",
            command="payment.charge",
            build=_charge,
            compensation="payment.refund",
            build_compensation=_refund,
        ),
        Step(
            name="create_shipment",
            participant="shipping",
            command="shipping.create",
            build=_ship,
            compensation="shipping.cancel",
            build_compensation=_cancel_shipment,
        ),
    ),
)

DEFINITIONS = (DEFINITION,)
