"""The Alembic environment of the car participant's own history."""

from participants.kit.migrate import run_env

run_env()
