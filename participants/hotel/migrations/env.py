"""The Alembic environment of the hotel participant's own history."""

from participants.kit.migrate import run_env

run_env()
