from __future__ import annotations

from collections.abc import Iterator

import pytest
from postgres_server import postgres_server


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLAlchemy URL of a real, throwaway PostgreSQL server, started once per test session."""
    with postgres_server(tmp_path_factory.mktemp("postgres")) as url:
        yield url
