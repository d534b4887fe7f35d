"""An answer never shows the server's filesystem paths: a model switch to a model the registry does
not have, or whose files are broken, is a 422 naming what the registry holds, not where it is."""
from __future__ import annotations

import shutil

import pytest

from models.registry import ModelNotFoundError, resolve
from tests.service.conftest import client_for, hdr


@pytest.fixture
def registry(tmp_path, models_root):
    root = tmp_path / "registry"
    shutil.copytree(models_root, root)
    broken = root / "sepsis-cfc" / "9"
    shutil.copytree(root / "sepsis-cfc" / "2", broken)
    (broken / "model_card.json").write_text("{not json")
    return root


def _switch(c, name: str, version: str):
    return c.post("/models/active", json={"name": name, "version": version, "by": "ops"}, headers=hdr("admin"))


def test_a_model_switch_refusal_shows_no_server_path(sqlite_url, registry):
    with client_for(sqlite_url, registry) as c:
        for name, version in (("sepsis-cfc", "7"), ("nothing", "1"), ("sepsis-cfc", "9")):
            r = _switch(c, name, version)
            assert r.status_code == 422, r.text
            assert str(registry) not in r.text and str(registry.parent) not in r.text and "/" not in r.json()["detail"], r.text
        assert "the registry holds: always (versions 1); sepsis-cfc (versions 1, 2)" in _switch(c, "sepsis-cfc", "7").json()["detail"]
        assert "its files are broken" in _switch(c, "sepsis-cfc", "9").json()["detail"]


def test_the_registry_error_keeps_its_paths_for_the_operator(registry):
    with pytest.raises(ModelNotFoundError) as err:
        resolve("sepsis-cfc", "7", root=registry)
    assert str(registry) in str(err.value) and str(registry) not in err.value.public
