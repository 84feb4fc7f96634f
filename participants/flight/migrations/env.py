"""The Alembic environment of the flight participant's own history."""

from participants.kit.migrate import run_env

run_env()
