import re

import pytest

from tests.factories import AnnotatorFactory, ResearcherFactory

pytestmark = pytest.mark.django_db


def test_api_docs_are_served_without_any_outside_host_and_only_to_researchers(client):
    client.force_login(ResearcherFactory())
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "drf_spectacular_sidecar" in html
    assert not re.search(r"(src|href)=\"https?://", html)
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/annotate/submit/" in schema.content and b"/api/research/rounds/" in schema.content

    client.force_login(AnnotatorFactory())
    assert client.get("/api/docs/").status_code == 403
    assert client.get("/api/schema/").status_code == 403
