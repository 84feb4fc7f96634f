"""Kafka's errors in the fault table (faults.py): imported by every module that talks to
the broker, which teaches the table these at import."""

from __future__ import annotations

from aiokafka import errors as kafka

from orchestrator import faults
from orchestrator.faults import Fault

_POISON_KAFKA = (
    kafka.MessageSizeTooLargeError,
    kafka.RecordTooLargeError,
    kafka.RecordListTooLargeError,
    kafka.InvalidTopicError,
    kafka.TopicAuthorizationFailedError,
    kafka.ClusterAuthorizationFailedError,
    kafka.PolicyViolationError,
    kafka.CorruptRecordException,
)
_DOUBTFUL_KAFKA = (kafka.UnknownTopicOrPartitionError,)
# A producer that lost its sequence numbers is replaced by a new one; a retry goes through.
_TRANSIENT_KAFKA = (
    kafka.KafkaConnectionError,
    kafka.KafkaTimeoutError,
    kafka.NoBrokersAvailable,
    kafka.OutOfOrderSequenceNumber,
    kafka.UnknownProducerId,
    kafka.InvalidProducerEpoch,
    kafka.InvalidProducerIdMapping,
    kafka.ProducerFenced,
    kafka.ProducerClosed,
)


def classify(exc: BaseException) -> Fault | None:
    if not isinstance(exc, kafka.KafkaError):
        return None
    if isinstance(exc, _POISON_KAFKA):
        return Fault.POISON
    if isinstance(exc, _DOUBTFUL_KAFKA):
        return Fault.DOUBTFUL
    if isinstance(exc, _TRANSIENT_KAFKA) or exc.retriable:
        return Fault.TRANSIENT
    return Fault.DOUBTFUL


faults.learn(classify)
