"""The store's statements stay within what psycopg caches: parsed once, not per call."""

from __future__ import annotations

import re

import psycopg._queries as psycopg_queries
import pytest

from orchestrator.store import saga_store


@pytest.mark.parametrize("name", ["_WRITE", "_CLAIM_DUE", "_NEXT_WAKE", "_PENDING", "_LOAD"])
def test_each_statement_is_small_enough_for_psycopg_to_cache_its_parsing(name: str) -> None:
    statement = getattr(saga_store, name)
    placeholders = set(re.findall(r"%\((\w+)\)s", statement))

    assert len(statement) <= psycopg_queries.MAX_CACHED_STATEMENT_LENGTH
    assert len(placeholders) <= psycopg_queries.MAX_CACHED_STATEMENT_PARAMS
