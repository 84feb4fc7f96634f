"""The Alembic environment of the inventory participant's own history."""

from participants.kit.migrate import run_env

run_env()
