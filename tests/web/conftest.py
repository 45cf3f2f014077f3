"""Page tests: a client that asks for HTML, as browsers do."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.web.helpers import HTML


@pytest.fixture
def browser(client: TestClient) -> TestClient:
    client.headers.update(HTML)
    return client
