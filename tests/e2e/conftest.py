from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import service_urls
from tests.e2e.system import System


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    database_url, kafka = service_urls()
    workdir: Path = tmp_path_factory.mktemp("system")
    system = System(database_url, kafka, workdir)
    system.create_database()
    try:
        system.start_all()
        yield system
    finally:
        system.stop_all()
        system.delete_topics()
        system.drop_database()
