# Everything a fresh machine needs is installed by these targets.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: help install services services-secure browser promtool migrate demo test unit faults bench lint format stop

help:
	@echo "make demo      install, start PostgreSQL + Kafka + the services, run two orders"
	@echo "make test      install, start PostgreSQL + Kafka, lint, run every test"
	@echo "make bench     the benchmark against its floor (bench/results/latest.json, latency.png)"
	@echo "make services  start PostgreSQL and Kafka only (writes .env)"
	@echo "make services-secure  a second PostgreSQL + Kafka with TLS, SASL and ACLs (.local/secure/)"
	@echo "make stop      stop the services, PostgreSQL and Kafka"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# make services KAFKA_BROKERS=3: a three-node Kafka cluster (replication 3, min.insync.replicas 2)
services:
	$(if $(KAFKA_BROKERS),SAGA_KAFKA_BROKERS=$(KAFKA_BROKERS) )deploy/local/services start

# a second, secured pair (TLS, SCRAM, ACLs, a role per process): .local/secure/*.env
services-secure:
	deploy/local/services start --secure

# the orchestrator's schema, then each participant's own (its own Alembic history)
migrate: install services
	$(BIN)/orchestrator migrate
	$(BIN)/participants migrate --all
	$(BIN)/orchestrator topics

demo: migrate
	$(BIN)/python deploy/local/demo.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: install
	$(BIN)/pytest tests/unit

browser:
	deploy/local/browser

promtool:  ## checks the alert rules; built once from its Go module into .local/bin
	deploy/observability/promtool >/dev/null

test: install services browser promtool lint
	$(BIN)/pytest

# make faults SIZE=10000 KAFKA_BROKERS=3: the broker faults on three nodes (one broker killed
# for 60 s, the leader of a busy partition killed); on one node, the broker restarted
SIZE ?= 1000
FAULT_RATE ?= 10
faults: install services  ## the fault-injection suite at a chosen size: make faults SIZE=5000
	$(BIN)/python -m tests.faults.chaos --sagas $(SIZE) --rate $(FAULT_RATE)

# make bench LEVELS=1,64 DURATION=30 RATE=50 COMPENSATE=0.2 SOAK=0 (SOAK: seconds at 64 in flight)
LEVELS ?= 1,8,64,256
DURATION ?= 20
COMPENSATE ?= 0.2
SOAK ?= 600
bench: install services
	$(BIN)/python -m bench --levels $(LEVELS) --duration $(DURATION) --compensate $(COMPENSATE) \
		--soak $(SOAK) $(if $(RATE),--rate $(RATE))

stop:
	-@[ -x $(BIN)/python ] && $(BIN)/python deploy/local/processes.py stop
	deploy/local/services stop
	deploy/local/services stop --secure
