import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.card import ModelCardError
from models.registry import PACKAGE_DIR, ModelNotFoundError, list_models, main, models_root, resolve
from models.runtime import StepRuntime
from models.testing import write_fixture_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "registry"
    for version in ("1", "2", "10"):
        write_fixture_model(r / "sepsis-cfc" / version, version=version)
    write_fixture_model(r / "sepsis-lstm" / "1", name="sepsis-lstm", state_size=4)
    write_fixture_model(r / "sepsis-cfc" / "candidate", version="candidate")
    (r / "sepsis-cfc" / "3").mkdir()  # an export in progress: no files yet
    (r / "__pycache__").mkdir()
    return r


def test_list_models_sorted_and_skips_incomplete(root):
    infos = list_models(root)
    assert [(i.name, i.version) for i in infos] == [
        ("sepsis-cfc", "candidate"), ("sepsis-cfc", "1"), ("sepsis-cfc", "2"), ("sepsis-cfc", "10"),
        ("sepsis-lstm", "1")]
    assert infos[-1].card.state_size == 4
    assert infos[1].onnx_path == root / "sepsis-cfc" / "1" / "model.onnx"


def test_resolve_defaults_to_highest_numeric_version(root):
    info = resolve(root=root)
    assert (info.name, info.version) == ("sepsis-cfc", "10")  # numeric, not lexical ("2" > "10")
    assert info.path == root / "sepsis-cfc" / "10"


def test_resolve_explicit_version_and_name(root):
    assert resolve("sepsis-cfc", 2, root=root).version == "2"
    assert resolve("sepsis-cfc", "candidate", root=root).version == "candidate"
    assert resolve("sepsis-lstm", root=root).card.state_size == 4


def test_env_overrides_root_and_name(root, monkeypatch):
    monkeypatch.setenv("SEPSIS_MODELS_DIR", str(root))
    monkeypatch.setenv("SEPSIS_MODEL", "sepsis-lstm")
    assert models_root() == root
    info = resolve()
    assert (info.name, info.version, info.path) == ("sepsis-lstm", "1", root / "sepsis-lstm" / "1")
    assert len(list_models()) == 5
    assert resolve("sepsis-cfc").version == "10"  # an explicit name beats the env


def test_default_root_is_the_package_directory():
    assert models_root() == PACKAGE_DIR
    assert PACKAGE_DIR == REPO / "models"


def test_missing_version_lists_what_exists(root):
    with pytest.raises(ModelNotFoundError) as err:
        resolve("sepsis-cfc", "7", root=root)
    msg = str(err.value)
    assert "no model 'sepsis-cfc' version '7'" in msg
    assert "sepsis-cfc (versions candidate, 1, 2, 10)" in msg and "sepsis-lstm (versions 1)" in msg


def test_missing_name_lists_what_exists(root):
    with pytest.raises(ModelNotFoundError, match=r"no model named 'sepsis-gru'.*sepsis-lstm \(versions 1\)"):
        resolve("sepsis-gru", root=root)


def test_empty_registry_says_so(tmp_path):
    with pytest.raises(ModelNotFoundError, match="holds no models"):
        resolve(root=tmp_path / "nothing-here")
    assert list_models(tmp_path / "nothing-here") == []


def test_broken_card_is_skipped_with_warning_but_named_when_requested(root):
    card_path = root / "sepsis-cfc" / "2" / "model_card.json"
    card = json.loads(card_path.read_text())
    del card["threshold"]
    card_path.write_text(json.dumps(card))
    with pytest.warns(UserWarning, match="field 'threshold'"):
        versions = [i.version for i in list_models(root)]
    assert "2" not in versions and "10" in versions
    with pytest.raises(ModelCardError, match=r"sepsis-cfc/2/model_card\.json.*field 'threshold'"):
        resolve("sepsis-cfc", "2", root=root)


def test_card_that_disagrees_with_its_folder_is_not_served(root):
    write_fixture_model(root / "sepsis-cfc" / "11", version="12")  # card says 12, folder says 11
    with pytest.warns(UserWarning, match="card says sepsis-cfc version 12 but the folder is sepsis-cfc/11"):
        list_models(root)
    assert resolve(root=root).version == "10"


def test_resolved_model_opens(root):
    rt = StepRuntime.open(resolve(root=root), device="cpu")
    assert (rt.name, rt.version) == ("sepsis-cfc", "10")


def test_cli_list_prints_a_table(root, capsys):
    assert main(["--root", str(root), "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "VERSION", "CORE"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["sepsis-cfc", "candidate"], ["sepsis-cfc", "1"], ["sepsis-cfc", "2"], ["sepsis-cfc", "10"], ["sepsis-lstm", "1"]]


def test_cli_resolve(root, capsys):
    assert main(["--root", str(root), "resolve"]) == 0
    assert capsys.readouterr().out.strip() == str(root / "sepsis-cfc" / "10")
    assert main(["--root", str(root), "resolve", "sepsis-cfc", "--version", "9"]) == 1
    assert "no model 'sepsis-cfc' version '9'" in capsys.readouterr().err


def test_python_dash_m_models_list_honours_env(root):
    out = subprocess.run([sys.executable, "-m", "models", "list"], cwd=REPO, capture_output=True, text=True,
                         env={"SEPSIS_MODELS_DIR": str(root), "PATH": ""}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "sepsis-lstm" in out.stdout and str(root) in out.stdout
