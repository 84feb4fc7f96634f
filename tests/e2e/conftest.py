from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import service_urls
from tests.e2e.system import System

DEMO_SKUS = ("SKU-RED", "SKU-BLUE")


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    database_url, kafka = service_urls()
    workdir: Path = tmp_path_factory.mktemp("system")
    with System(database_url, kafka, workdir).running() as system:
        for sku in DEMO_SKUS:  # the README's and the demo's orders
            system.restock(sku, 1000)
        yield system
