import pytest

from models.registry import ENV_MODEL, ENV_ROOT


@pytest.fixture(autouse=True)
def _clean_registry_env(monkeypatch):
    # A developer's shell may point these elsewhere; every test states what it wants.
    monkeypatch.delenv(ENV_ROOT, raising=False)
    monkeypatch.delenv(ENV_MODEL, raising=False)
