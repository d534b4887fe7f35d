import onnx

from models.card import MIN_OPSET, load_card
from models.testing import write_fixture_model


def test_fixture_is_deterministic(tmp_path):
    a = write_fixture_model(tmp_path / "a")
    b = write_fixture_model(tmp_path / "b")
    assert (a / "model.onnx").read_bytes() == (b / "model.onnx").read_bytes()
    assert (a / "model_card.json").read_text() == (b / "model_card.json").read_text()


def test_fixture_honours_the_artifact_contract(tmp_path):
    d = write_fixture_model(tmp_path / "m", state_size=5, threshold=0.7, name="demo", version="3")
    model = onnx.load(str(d / "model.onnx"))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= MIN_OPSET
    ops = {n.op_type for n in model.graph.node}
    assert {"IsNaN", "Where", "Tanh", "Sigmoid"} <= ops

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    assert {v.name: dims(v) for v in model.graph.input} == {
        "observation": ["batch", 40], "elapsed_hours": ["batch", 1], "state": ["batch", 5]}
    assert {v.name: dims(v) for v in model.graph.output} == {"risk": ["batch", 1], "next_state": ["batch", 5]}
    card = load_card(d / "model_card.json")
    assert (card.name, card.version, card.state_size, card.threshold) == ("demo", "3", 5, 0.7)


def test_fixture_card_claims_no_measured_metrics(tmp_path):
    card = load_card(write_fixture_model(tmp_path / "m") / "model_card.json")
    m = card.metrics
    assert (m.auroc, m.auprc, m.utility, m.median_lead_time_hours) == (None, None, None, None)
    assert "fixture" in m.split
