"""A saga orchestrator for microservices on Kafka and PostgreSQL."""
