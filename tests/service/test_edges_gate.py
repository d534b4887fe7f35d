"""The key is checked before a body is read: a keyless (or wrong-role) request is answered 401/403
with nothing of its body received, with the same answer the route's own check gives; a good key's
body is read and the size limit still holds."""
from __future__ import annotations

import json

import pytest

from tests.service.conftest import client_for, hdr, obs

BIG = 4 * 1024 * 1024  # sent in 64 KiB chunks, under the body limit


async def _post(app, path: str, headers: dict, body: bytes, chunk: int = 64 * 1024):
    """POST `body` to the ASGI app in chunks; (status, answer, bytes the app received)."""
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    received, sent = {"bytes": 0, "next": 0}, {"status": None, "body": b""}

    async def receive():
        if received["next"] < len(chunks):
            piece = chunks[received["next"]]
            received["next"] += 1
            received["bytes"] += len(piece)
            return {"type": "http.request", "body": piece, "more_body": received["next"] < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": raw,
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    await app(scope, receive, send)
    return sent["status"], json.loads(sent["body"]), received["bytes"]


def _padded(n: int) -> bytes:
    return json.dumps({"observations": [obs("g1", 0, HR=80)], "pad": "x" * n}).encode()


@pytest.mark.parametrize("path,content_type", [("/predict", "application/json"), ("/predict/batch", "application/json"),
                                               ("/patients", "application/json"), ("/alarms/1/ack", "application/json"),
                                               ("/models/active", "application/json"),
                                               ("/fhir", "application/fhir+json")])
def test_a_refused_key_is_answered_before_the_body_is_read(sqlite_url, models_root, path, content_type):
    with client_for(sqlite_url, models_root) as c:
        keyless = c.get("/alarms").json()
        for headers, status in (({}, 401), (hdr("monitor"), 403), ({"X-API-Key": "sk_not_a_key"}, 401)):
            got, answer, read = c.portal.call(_post, c.app, path, {"content-type": content_type, **headers}, _padded(BIG))
            assert (got, read) == (status, 0), (path, headers, got, answer, read)
            assert answer == (keyless if not headers else {"detail": "unknown or revoked API key"} if status == 401
                              else {"detail": answer["detail"]})
            assert status == 401 or answer["detail"].startswith("role 'monitor' may not do this; it needs a key with")
        # the route's own check gives the same bodies
        assert c.post(path, content=b"{}", headers={"content-type": content_type}).json() == keyless
        # with a good key the body is read whole (and answered on its merits)
        got, _, read = c.portal.call(_post, c.app, path, {"content-type": content_type, **hdr("admin")}, _padded(1000))
        assert read == len(_padded(1000)) and got in (200, 201, 404, 409, 422), (path, got)


def test_a_good_key_still_meets_the_body_limit(sqlite_url, models_root):
    with client_for(sqlite_url, models_root, max_body_bytes=2000) as c:
        got, answer, read = c.portal.call(_post, c.app, "/predict", {"content-type": "application/json", **hdr("ingest")},
                                          _padded(BIG))
        assert got == 413 and "2000 bytes" in answer["detail"] and read < BIG
        got, _, _ = c.portal.call(_post, c.app, "/predict", {"content-type": "application/json", **hdr("ingest")},
                                  json.dumps(obs("g2", 0, HR=80)).encode())
        assert got == 200


def test_a_route_without_a_body_reads_none(sqlite_url, models_root):
    """A body sent to an open route or to no route at all is never received."""
    with client_for(sqlite_url, models_root) as c:
        for path, status in (("/health", 405), ("/nowhere", 404)):
            got, _, read = c.portal.call(_post, c.app, path, {"content-type": "application/json"}, _padded(BIG))
            assert (got, read) == (status, 0)
