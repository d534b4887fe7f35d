"""GET /whoami: a client learns its key's role and permissions without trying an action."""
from __future__ import annotations

import pytest

from tests.service.conftest import KEYS, hdr


@pytest.mark.parametrize("role, permissions", [
    ("viewer", ["viewer"]),
    ("clinician", ["clinician", "viewer"]),
    ("ingest", ["ingest"]),
    ("monitor", ["metrics"]),
    ("admin", ["admin", "clinician", "ingest", "metrics", "viewer"]),
])
def test_whoami_names_the_role_and_its_permissions(client, role, permissions):
    r = client.get("/whoami", headers=hdr(role))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["role"], body["permissions"]) == (role, permissions)
    assert body["prefix"] == KEYS[role][:6] and KEYS[role] not in r.text


def test_whoami_refuses_a_missing_or_unknown_key(client):
    assert client.get("/whoami").status_code == 401
    assert client.get("/whoami", headers={"X-API-Key": "sk_nope"}).status_code == 401
