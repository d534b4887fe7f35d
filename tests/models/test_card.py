import json

import pytest

from models.card import FEATURES, ModelCard, ModelCardError, load_card, parse_card
from models.testing import fixture_card


def write(tmp_path, card) -> str:
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(card))
    return path


def test_features_are_the_40_physionet_columns_in_file_order():
    header = ("HR|O2Sat|Temp|SBP|MAP|DBP|Resp|EtCO2|BaseExcess|HCO3|FiO2|pH|PaCO2|SaO2|AST|BUN|Alkalinephos|"
              "Calcium|Chloride|Creatinine|Bilirubin_direct|Glucose|Lactate|Magnesium|Phosphate|Potassium|"
              "Bilirubin_total|TroponinI|Hct|Hgb|PTT|WBC|Fibrinogen|Platelets|Age|Gender|Unit1|Unit2|"
              "HospAdmTime|ICULOS|SepsisLabel")
    assert list(FEATURES) == header.split("|")[:-1]


def test_valid_card_round_trips(tmp_path):
    card = load_card(write(tmp_path, fixture_card(state_size=8, threshold=0.3)))
    assert (card.name, card.version, card.state_size, card.threshold) == ("sepsis-cfc", "1", 8, 0.3)
    assert card.created.tzinfo is not None
    again = ModelCard.model_validate_json(card.to_json())
    assert again == card


def test_extra_metric_keys_are_kept(tmp_path):
    raw = fixture_card()
    raw["metrics"]["non_septic_alarmed"] = 0.12
    card = load_card(write(tmp_path, raw))
    assert card.model_dump()["metrics"]["non_septic_alarmed"] == 0.12


def test_integer_version_becomes_text(tmp_path):
    assert load_card(write(tmp_path, fixture_card(version=3) | {"version": 3})).version == "3"


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c.pop("threshold"), "threshold"),
    (lambda c: c.update(threshold=1.5), "threshold"),
    (lambda c: c.update(state_size=0), "state_size"),
    (lambda c: c.update(opset=13), "opset"),
    (lambda c: c.update(created="yesterday"), "created"),
    (lambda c: c["metrics"].update(auroc=1.2), "metrics.auroc"),
    (lambda c: c["metrics"].pop("utility"), "metrics.utility"),
    (lambda c: c["training_data"].update(sha256="abc"), "training_data.sha256"),
    (lambda c: c.update(features=c["features"][:39]), "features"),
    (lambda c: c.update(limitations=[]), "limitations"),
    (lambda c: c.update(thresold=0.5), "thresold"),
    (lambda c: c.update(name="../etc"), "name"),
])
def test_invalid_card_names_the_file_and_field(tmp_path, mutate, field):
    raw = fixture_card()
    mutate(raw)
    path = write(tmp_path, raw)
    with pytest.raises(ModelCardError) as err:
        load_card(path)
    assert str(path) in str(err.value)
    assert f"field '{field}'" in str(err.value)


def test_features_out_of_order_says_where(tmp_path):
    raw = fixture_card()
    raw["features"][0], raw["features"][1] = raw["features"][1], raw["features"][0]
    with pytest.raises(ModelCardError, match="position 0 is 'O2Sat', expected 'HR'"):
        load_card(write(tmp_path, raw))


def test_nan_metric_is_rejected():
    raw = fixture_card()
    raw["metrics"]["utility"] = float("nan")
    with pytest.raises(ModelCardError, match="metrics.utility"):
        parse_card(raw, "card.json")


def test_broken_json_gives_line_and_column(tmp_path):
    path = tmp_path / "model_card.json"
    path.write_text('{\n  "name": "sepsis-cfc",\n  "version": \n}')
    with pytest.raises(ModelCardError, match=r"model_card\.json: line 4, column 1: invalid JSON"):
        load_card(path)


def test_missing_card_names_the_file(tmp_path):
    with pytest.raises(ModelCardError, match=r"nope\.json: model card not found"):
        load_card(tmp_path / "nope.json")


def test_non_object_card(tmp_path):
    path = tmp_path / "model_card.json"
    path.write_text("[1, 2]")
    with pytest.raises(ModelCardError, match="must be a JSON object"):
        load_card(path)
