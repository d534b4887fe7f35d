"""Settings (service/config.py): every SEPSIS_* variable typed and checked when the service starts;
a typo in a choice, a number that is not one, a value out of range fails with a message naming the
variable, instead of being served as a default or as a string no code path expects."""
from __future__ import annotations

import subprocess
import sys

import pytest

from service.config import Settings, SettingsError
from tests.service.live import ROOT


@pytest.fixture
def env(monkeypatch):
    def setenv(**values):
        for name, value in values.items():
            monkeypatch.setenv(f"SEPSIS_{name.upper()}", value)
    return setenv


def test_values_are_read_typed_and_an_empty_one_is_the_default(env):
    env(clock="simulated", sqlite_synchronous="normal", explain="off", migrate="0", port="", db_pool_timeout_s="2.5",
        max_batch_rows="50", device="cpu", microbatch="on", http="h11", model_version="3")
    s = Settings.from_env()
    assert (s.clock, s.sqlite_synchronous, s.explain, s.migrate, s.port, s.db_pool_timeout_s) == \
        ("simulated", "NORMAL", False, False, 8000, 2.5)
    assert (s.max_batch_rows, s.device, s.microbatch, s.http, s.model_version) == (50, "cpu", "on", "h11", "3")
    # the command line's options win over the environment; Settings(...) is only what it is given
    assert Settings.from_env(clock="wall", port=None).clock == "wall" and Settings.from_env(port=None).port == 8000
    assert Settings(port=9000) == Settings().model_copy(update={"port": 9000}) and Settings().clock == "wall"


@pytest.mark.parametrize("name,value,why", [
    ("clock", "feed", "'wall' or 'simulated'"),
    ("device", "gpu", "'auto', 'cpu' or 'cuda'"),
    ("microbatch", "yes", "'auto', 'on' or 'off'"),
    ("http", "h12", "'auto', 'h11' or 'httptools'"),
    ("sqlite_synchronous", "SOMETIMES", "'NORMAL', 'FULL' or 'EXTRA'"),
    ("explain", "maybe", "valid boolean"),
    ("port", "eighty", "valid integer"),
    ("port", "70000", "less than or equal to 65535"),
    ("max_batch_rows", "0", "greater than or equal to 1"),
    ("max_batch_rows", "20001", "less than or equal to 20000"),
    ("db_pool_size", "0", "greater than or equal to 1"),
    ("key_cache_seconds", "-1", "greater than or equal to 0"),
])
def test_a_bad_value_fails_naming_the_variable(env, name, value, why):
    env(**{name: value})
    with pytest.raises(SettingsError) as err:
        Settings.from_env()
    assert f"SEPSIS_{name.upper()}={value!r}" in str(err.value) and why in str(err.value)


def test_every_problem_is_named_at_once_and_a_keyword_typo_too(env):
    env(clock="wal", port="x")
    with pytest.raises(SettingsError, match=r"SEPSIS_CLOCK='wal'.*; port \(SEPSIS_PORT='x'\)"):
        Settings.from_env()
    with pytest.raises(SettingsError, match="clok: not a setting"):
        Settings(clok="wall")


def test_the_server_does_not_start_on_a_bad_setting(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SEPSIS_CLOCK": "feed",
           "SEPSIS_DB_URL": f"sqlite:///{tmp_path / 's.db'}"}
    done = subprocess.run([sys.executable, "-m", "service"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "error: clock (SEPSIS_CLOCK='feed'): Input should be 'wall' or 'simulated'" in \
        done.stderr, done.stderr
    assert not (tmp_path / "s.db").exists()


def test_the_readme_lists_every_setting():
    readme = (ROOT / "service" / "README.md").read_text()
    listed = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `SEPSIS_")}
    assert listed == {f"SEPSIS_{name.upper()}" for name in Settings.model_fields}
