"""Kafka adapters: the wire codec, topic administration, the outbox relay and consumers."""
