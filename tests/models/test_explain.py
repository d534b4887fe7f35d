"""Contributions (models/explain.py) against a clinical reference (the default) and by withholding
(baseline="missing"), on the fixture step and the shipped sepsis-cfc/3."""
from pathlib import Path

import numpy as np
import pytest

from models.contract import FEATURES, INDEX, N_FEATURES
from models.explain import (GAP_COLUMNS, LEAD_FLOOR, SHOWN_UNMEASURED, find_memory, latest_ages, latest_values,
                            top_contributions, top_unmeasured, unmeasured_deltas, withheld_deltas)
from models.reference import NORMAL, REFERENCES
from models.runtime import StepRuntime
from models.testing import CountingStep, fixture_weights, reference_step, write_fixture_model

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "sepsis-cfc"
# the florid septic-shock observation
FLORID = {"HR": 128, "MAP": 58, "Temp": 39.4, "Resp": 32, "Lactate": 4.8, "WBC": 19, "Creatinine": 2.4,
          "Platelets": 90}


def row(values: dict, iculos: float = 1.0) -> np.ndarray:
    r = np.full(N_FEATURES, np.nan, np.float32)
    for name, v in values.items():
        r[INDEX[name]] = v
    r[INDEX["ICULOS"]] = iculos
    return r


@pytest.fixture(scope="module")
def fixture_rt(tmp_path_factory):
    return StepRuntime.open(write_fixture_model(tmp_path_factory.mktemp("m") / "f", state_size=8), device="cpu")


@pytest.fixture(scope="module")
def shipped():
    rt = StepRuntime.open(SHIPPED / "3", device="cpu", intra_op_threads=1)
    return rt, find_memory(rt._run, rt.state_size)


def fixture_batch(seed=0, n=4):
    rng = np.random.default_rng(seed)
    obs = rng.normal(60, 25, size=(n, N_FEATURES)).astype(np.float32)
    obs[rng.random((n, N_FEATURES)) < 0.6] = np.nan
    obs[:, INDEX["ICULOS"]] = np.arange(1, n + 1)
    elapsed = rng.uniform(0, 2, size=(n, 1)).astype(np.float32)
    state = rng.uniform(-0.5, 0.5, size=(n, 8)).astype(np.float32)
    return obs, elapsed, state


# -- the fixture step (no per-variable memory): only posted values can be withheld ---------------

def test_fixture_step_has_no_memory(fixture_rt):
    assert find_memory(fixture_rt._run, fixture_rt.state_size) is None


@pytest.mark.parametrize("baseline", ["reference", "missing"])
def test_delta_is_the_risk_difference_of_separate_runs_of_the_reference(fixture_rt, baseline):
    obs, elapsed, state = fixture_batch()
    deltas = withheld_deltas(fixture_rt._run, obs, elapsed, state, baseline=baseline)
    w = fixture_weights(8, 0)
    base, _ = reference_step(obs, elapsed, state, w)
    checked = 0
    for i in range(len(obs)):
        for j in range(N_FEATURES):
            if np.isnan(obs[i, j]) or FEATURES[j] == "ICULOS":
                assert deltas[i, j] == 0.0  # unmeasured: nothing to replace; ICULOS: never replaced
                continue
            variant = obs[i:i + 1].copy()
            # the reference replaces a vital or lab; an administrative column has none and is withheld
            variant[0, j] = NORMAL[j] if baseline == "reference" else np.nan
            risk, _ = reference_step(variant, elapsed[i:i + 1], state[i:i + 1], w)
            assert deltas[i, j] == pytest.approx(base[i, 0] - risk[0, 0], abs=2e-6)
            checked += 1
    assert checked > 20 and np.count_nonzero(deltas) > 20


def test_all_variants_of_all_rows_go_through_one_call(fixture_rt):
    obs, elapsed, state = fixture_batch(seed=1, n=5)
    step = CountingStep(fixture_rt._run)
    withheld_deltas(step, obs, elapsed, state)
    variants = int(np.count_nonzero(~np.isnan(obs))) - len(obs)  # every posted value but ICULOS
    assert step.calls == [len(obs) + variants]


def test_max_rows_splits_between_observations_with_the_same_deltas(fixture_rt):
    obs, elapsed, state = fixture_batch(seed=3, n=12)
    one = CountingStep(fixture_rt._run)
    expected = withheld_deltas(one, obs, elapsed, state, max_rows=None)
    split = CountingStep(fixture_rt._run)
    got = withheld_deltas(split, obs, elapsed, state, max_rows=30)
    sizes = np.count_nonzero(~np.isnan(obs), axis=1)  # the row itself + a variant per posted value but ICULOS
    assert len(one.calls) == 1 and len(split.calls) > 1
    assert sum(split.calls) == one.calls[0] and all(c <= max(30, sizes.max()) for c in split.calls)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="max_rows"):
        withheld_deltas(fixture_rt._run, obs, elapsed, state, max_rows=0)


def test_risk_as_a_vector_and_elapsed_as_a_vector_are_accepted(fixture_rt):
    obs, elapsed, state = fixture_batch(seed=2)
    expected = withheld_deltas(fixture_rt._run, obs, elapsed, state)

    def flat(o, e, s):
        risk, nxt = fixture_rt._run(o, e, s)
        return risk[:, 0], nxt

    np.testing.assert_array_equal(withheld_deltas(flat, obs, elapsed[:, 0], state), expected)


def test_nothing_to_withhold_makes_no_call(fixture_rt):
    step = CountingStep(fixture_rt._run)
    assert withheld_deltas(step, np.zeros((0, N_FEATURES), np.float32), np.zeros((0, 1)), np.zeros((0, 8))).shape \
        == (0, N_FEATURES)
    only_iculos = row({})[None]
    out = withheld_deltas(step, only_iculos, np.ones((1, 1)), np.zeros((1, 8), np.float32))
    assert step.calls == [] and not out.any()


@pytest.mark.parametrize("obs, elapsed, state, field", [
    (np.zeros((2, 39)), np.zeros((2, 1)), np.zeros((2, 8)), "obs"),
    (np.zeros((2, 40)), np.zeros((3, 1)), np.zeros((2, 8)), "elapsed"),
    (np.zeros((2, 40)), np.zeros((2, 1)), np.zeros((1, 8)), "state"),
])
def test_bad_shapes_are_refused_naming_the_argument(fixture_rt, obs, elapsed, state, field):
    with pytest.raises(ValueError, match=field):
        withheld_deltas(fixture_rt._run, obs, elapsed, state)


def test_a_step_returning_the_wrong_number_of_risks_is_an_error(fixture_rt):
    obs, elapsed, state = fixture_batch()
    with pytest.raises(ValueError, match="risks"):
        withheld_deltas(lambda o, e, s: fixture_rt._run(o[:1], e[:1], s[:1]), obs, elapsed, state)


# -- top_contributions ----------------------------------------------------------------------------

def test_top_contributions_sorted_by_size_zeros_dropped_values_as_posted():
    deltas = np.zeros(N_FEATURES)
    deltas[INDEX["Lactate"]] = 0.031
    deltas[INDEX["MAP"]] = -0.05
    deltas[INDEX["HR"]] = 0.01
    deltas[INDEX["WBC"]] = 4e-7  # rounds to 0 at 6 decimals: dropped
    obs = row({"Lactate": 4.8, "MAP": 58, "HR": 128, "WBC": 19})
    obs[INDEX["HR"]] = np.nan  # a carried value not passed in: no value to show
    ages = np.full(N_FEATURES, np.nan)
    ages[[INDEX["MAP"], INDEX["Lactate"]]] = [0.0, 26.5]
    assert top_contributions(deltas, obs, ages_row=ages) == [
        {"feature": "MAP", "value": 58.0, "delta": -0.05, "system": "cardiovascular", "reference": 85.0,
         "unit": "mmHg", "hours_since": 0.0, "basis": "value"},
        {"feature": "Lactate", "value": 4.8, "delta": 0.031, "system": "metabolic/perfusion", "reference": 1.0,
         "unit": "mmol/L", "hours_since": 26.5, "basis": "value"},
        {"feature": "HR", "value": None, "delta": 0.01, "system": "cardiovascular", "reference": 80.0,
         "unit": "beats/min", "hours_since": None, "basis": "value"},
    ]
    assert [c["feature"] for c in top_contributions(deltas, obs, k=2)] == ["MAP", "Lactate"]
    assert "hours_since" not in top_contributions(deltas, obs)[0]  # without ages: not shown
    assert top_contributions(np.zeros(N_FEATURES), obs) == []


def test_administrative_columns_lead_only_when_nothing_clinical_moves_the_risk():
    deltas = np.zeros(N_FEATURES)
    deltas[INDEX["Age"]] = 0.04
    deltas[INDEX["HospAdmTime"]] = -0.02
    deltas[INDEX["HR"]] = LEAD_FLOOR  # just enough to move the risk
    deltas[INDEX["Temp"]] = -0.002
    deltas[INDEX["WBC"]] = LEAD_FLOOR / 2  # too small to lead
    obs = row({"Age": 80, "HospAdmTime": -3, "HR": 95, "Temp": 37.5, "WBC": 9})
    top = top_contributions(deltas, obs)
    assert [c["feature"] for c in top] == ["Temp", "HR", "Age", "HospAdmTime", "WBC"]
    assert top[2]["system"] == "administrative" and top[2]["reference"] is None and top[2]["unit"] is None
    assert top[0]["unit"] == "deg C"  # a clinical value's unit, as in models/reference_values.csv
    deltas[INDEX["HR"]] = deltas[INDEX["Temp"]] = 0.0  # nothing clinical moves the risk: by size
    assert [c["feature"] for c in top_contributions(deltas, obs)] == ["Age", "HospAdmTime", "WBC"]


def test_top_contributions_refuses_bad_input():
    with pytest.raises(ValueError, match="40"):
        top_contributions(np.zeros(39), np.zeros(40))
    with pytest.raises(ValueError, match="k"):
        top_contributions(np.zeros(40), np.zeros(40), k=-1)
    bad = np.zeros(40)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        top_contributions(bad, np.zeros(40))
    with pytest.raises(ValueError, match="ages_row"):
        top_contributions(np.zeros(40), np.zeros(40), ages_row=np.zeros(39))


def test_top_unmeasured_keeps_only_gaps_that_raise_the_risk_largest_first():
    deltas = np.zeros(N_FEATURES)
    deltas[INDEX["Lactate"]] = 0.012            # never measured, raises the risk
    deltas[INDEX["Platelets"]] = 0.03           # 30 h old, raises it most
    deltas[INDEX["WBC"]] = LEAD_FLOOR           # just enough
    deltas[INDEX["Bilirubin_total"]] = -0.08    # the absence read as reassuring: never shown
    deltas[INDEX["Creatinine"]] = LEAD_FLOOR * 0.99  # raises it, but by less than LEAD_FLOOR
    deltas[INDEX["Fibrinogen"]] = 0.05          # not one of the 13 sepsis-defining variables: never a reason
    values = row({"Platelets": 80, "WBC": 15, "Bilirubin_total": 1.1, "Creatinine": 1.0})
    values[INDEX["Lactate"]] = np.nan
    ages = np.full(N_FEATURES, np.nan)
    ages[[INDEX["Platelets"], INDEX["WBC"], INDEX["Bilirubin_total"], INDEX["Creatinine"]]] = [30.0, 26.25, 40, 50]
    assert SHOWN_UNMEASURED == 2
    assert top_unmeasured(deltas, values, ages) == [
        {"feature": "Platelets", "value": 80.0, "delta": 0.03, "system": "coagulation", "reference": 250.0,
         "unit": "10^3/uL", "hours_since": 30.0, "basis": "not measured"},
        {"feature": "Lactate", "value": None, "delta": 0.012, "system": "metabolic/perfusion", "reference": 1.0,
         "unit": "mmol/L", "hours_since": None, "basis": "not measured"},
    ]
    got = top_unmeasured(deltas, values, ages, k=10)
    assert [c["feature"] for c in got] == ["Platelets", "Lactate", "WBC"]
    assert got[2]["value"] == 15.0 and got[2]["hours_since"] == 26.25 and got[2]["delta"] == LEAD_FLOOR
    assert top_unmeasured(deltas, values, ages, k=0) == []
    assert top_unmeasured(-np.abs(deltas), values, ages) == []  # only negative gaps: nothing
    deltas[INDEX["Lactate"]] = 0.03  # a tie: column order
    assert [c["feature"] for c in top_unmeasured(deltas, values, ages)] == \
        sorted(["Platelets", "Lactate"], key=FEATURES.index)
    with pytest.raises(ValueError, match="40"):
        top_unmeasured(np.zeros(39), values, ages)
    with pytest.raises(ValueError, match="k"):
        top_unmeasured(deltas, values, ages, k=-1)


# -- the shipped model: its forward-fill memory is found and withheld ----------------------------

def test_memory_layout_of_the_shipped_steps_is_the_documented_one(shipped):
    rt, memory = shipped
    assert rt.state_size == 1455 and memory is not None
    offsets = np.arange(5) * 291  # 5 members of [last | since | seen | count] 160 + core 128 + hold 3
    j = np.arange(N_FEATURES)
    np.testing.assert_array_equal(memory.last, offsets[:, None] + j)
    np.testing.assert_array_equal(memory.since, offsets[:, None] + 40 + j)
    np.testing.assert_array_equal(memory.seen, offsets[:, None] + 80 + j)
    np.testing.assert_array_equal(memory.count, offsets[:, None] + 120 + j)
    v1 = StepRuntime.open(SHIPPED / "1", device="cpu")  # v1: one model, no counts
    m1 = find_memory(v1._run, v1.state_size)
    assert m1.members == 1 and m1.count is None
    np.testing.assert_array_equal(m1.seen, [80 + j])


def test_memory_in_another_layout_is_not_guessed():
    def seen_first(obs, elapsed, state):  # [seen | last]: a memory, but not in the documented layout
        seen, last = state[:, :40], state[:, 40:]
        measured = ~np.isnan(obs)
        nxt = np.concatenate([np.where(measured, 1.0, seen), np.where(measured, obs, last)], axis=1)
        return np.full((len(obs), 1), 0.5, np.float32), nxt.astype(np.float32)

    assert find_memory(seen_first, 80) is None


def history(rt, rows):
    state = rt.new_state(1)
    for t, values in enumerate(rows):
        state = rt.step(row(values, t + 1)[None], np.array([[0.0 if t == 0 else 1.0]], np.float32), state).next_state
    return state


def test_a_carried_value_is_withheld_by_resetting_its_memory(shipped):
    rt, memory = shipped
    # lactate measured two hours ago, only vitals now
    state = history(rt, [{"HR": 90, "Lactate": 4.8}, {"HR": 95}])
    obs = row({"HR": 100, "Resp": 24}, 3)[None]
    elapsed = np.ones((1, 1), np.float32)
    deltas = withheld_deltas(rt._run, obs, elapsed, state, memory=memory, baseline="missing")
    lactate = INDEX["Lactate"]
    as_posted = rt.step(obs, elapsed, state).risk[0]
    expected = as_posted - rt.step(obs, elapsed, reset_by_hand(state, lactate)).risk[0]
    assert deltas[0, lactate] != 0.0
    assert deltas[0, lactate] == pytest.approx(expected, abs=1e-6)
    # without the memory only the posted values are withheld
    plain = withheld_deltas(rt._run, obs, elapsed, state, baseline="missing")
    assert plain[0, lactate] == 0.0 and plain[0, INDEX["Resp"]] == pytest.approx(deltas[0, INDEX["Resp"]], abs=1e-6)
    # the value shown for it is the carried one
    assert latest_values(obs, state, memory)[0, lactate] == pytest.approx(4.8)
    # never measured, never carried: exactly 0
    assert deltas[0, INDEX["Platelets"]] == 0.0 and deltas[0, INDEX["ICULOS"]] == 0.0


def reset_by_hand(state, j):
    """Variable j never measured in every member's memory, from the documented layout."""
    out = state.copy()
    for m in range(5):
        out[:, m * 291 + np.array([0, 40, 80, 120]) + j] = 0.0
    return out


def test_a_value_posted_now_and_carried_is_withheld_in_both(shipped):
    rt, memory = shipped
    state = history(rt, [{"HR": 90, "Resp": 18}, {"HR": 95, "Resp": 20}])
    obs = row({"HR": 130, "Resp": 30}, 3)[None]
    elapsed = np.ones((1, 1), np.float32)
    deltas = withheld_deltas(rt._run, obs, elapsed, state, memory=memory, baseline="missing")
    hr = INDEX["HR"]
    no_hr = obs.copy()
    no_hr[0, hr] = np.nan
    as_posted = rt.step(obs, elapsed, state).risk[0]
    assert deltas[0, hr] == pytest.approx(as_posted - rt.step(no_hr, elapsed, reset_by_hand(state, hr)).risk[0],
                                          abs=1e-6)
    # not the same as withholding only the posted value (the step would then read HR 95 carried)
    assert abs(deltas[0, hr] - (as_posted - rt.step(no_hr, elapsed, state).risk[0])) > 1e-4


def test_on_a_first_hour_withholding_is_leaving_the_value_out(shipped):
    rt, memory = shipped
    first = row({"HR": 130, "Resp": 30, "Age": 70}, 1)[None]
    zero = rt.new_state(1)
    d = withheld_deltas(rt._run, first, np.zeros((1, 1), np.float32), zero, memory=memory, baseline="missing")
    for name in ("HR", "Resp", "Age"):
        without = first.copy()
        without[0, INDEX[name]] = np.nan
        assert d[0, INDEX[name]] == pytest.approx(
            rt.step(first, [0.0], zero).risk[0] - rt.step(without, [0.0], zero).risk[0], abs=1e-6)
    assert np.count_nonzero(d) == 3


def test_batched_rows_equal_rows_explained_one_at_a_time(shipped):
    rt, memory = shipped
    states = np.concatenate([history(rt, [{"HR": 80, "Lactate": 1.1}]), history(rt, [{"HR": 120, "WBC": 18}]),
                             rt.new_state(1)])
    obs = np.stack([row({"HR": 85}, 2), row({"Temp": 38.9, "Resp": 26}, 2), row(FLORID, 1)])
    elapsed = np.array([[1.0], [1.0], [0.0]], np.float32)
    step = CountingStep(rt._run)
    together = withheld_deltas(step, obs, elapsed, states, memory=memory)
    assert len(step.calls) == 1
    for i in range(3):
        alone = withheld_deltas(rt._run, obs[i:i + 1], elapsed[i:i + 1], states[i:i + 1], memory=memory)
        np.testing.assert_allclose(together[i], alone[0], atol=1e-6)


def test_florid_septic_shock_on_the_shipped_model(shipped):
    rt, memory = shipped
    obs = row(FLORID, 1)[None]
    zero = rt.new_state(1)
    risk = rt.step(obs, [0.0], zero).risk[0]
    deltas = withheld_deltas(rt._run, obs, np.zeros((1, 1), np.float32), zero, memory=memory)
    top = top_contributions(deltas[0], latest_values(obs, zero, memory)[0])
    assert risk > rt.threshold
    assert [c["feature"] for c in top[:2]] == ["Temp", "Resp"] and all(c["delta"] > 0 for c in top[:2])
    assert len(top) == 5 and {c["feature"] for c in top} <= set(FLORID)
    assert [abs(c["delta"]) for c in top] == sorted((abs(c["delta"]) for c in top), reverse=True)
    assert {c["feature"]: c["value"] for c in top}["Temp"] == 39.4


# -- clinically constructed patients on sepsis-cfc/3, against the reference --------------------

ADMISSION = {"Age": 67, "Gender": 1, "Unit1": 1, "Unit2": 0, "HospAdmTime": -10}
NORMAL_VITALS = {"HR": 78, "O2Sat": 97, "Temp": 36.9, "SBP": 122, "MAP": 86, "DBP": 72, "Resp": 15}
NORMAL_LABS = {"Lactate": 1.1, "WBC": 8.0, "Creatinine": 0.9, "Platelets": 240, "pH": 7.41, "HCO3": 24,
               "Bilirubin_total": 0.6, "Hgb": 12.5}


def last_hour(rt, hours):
    """Stream hourly rows (each with the admission record) up to the last one: its (obs, elapsed, state)."""
    rows = [row({**ADMISSION, **values}, t + 1) for t, values in enumerate(hours)]
    state = rt.new_state(1)
    for t, r in enumerate(rows[:-1]):
        state = rt.step(r[None], [0.0 if t == 0 else 1.0], state).next_state
    return rows[-1][None], np.array([[0.0 if len(rows) == 1 else 1.0]], np.float32), state


def explain_last_hour(rt, memory, hours):
    """Stream hourly rows (each with the admission record) and explain the last one:
    (risk, deltas [40], top contributions with ages)."""
    obs, elapsed, state = last_hour(rt, hours)
    deltas = withheld_deltas(rt._run, obs, elapsed, state, memory=memory)
    top = top_contributions(deltas[0], latest_values(obs, state, memory)[0], k=5,
                            ages_row=latest_ages(obs, elapsed, state, memory)[0])
    return rt.step(obs, elapsed, state).risk[0], deltas[0], top


def test_a_value_equal_to_its_reference_contributes_exactly_zero_posted_or_carried(shipped):
    rt, memory = shipped
    normal = {name: float(NORMAL[INDEX[name]]) for name in ("HR", "MAP", "Lactate", "Platelets")}
    state = history(rt, [{**ADMISSION, "Lactate": normal["Lactate"], "Platelets": normal["Platelets"], "HR": 120}])
    obs = row({**ADMISSION, "HR": normal["HR"], "MAP": normal["MAP"], "Resp": 28}, 2)[None]
    elapsed = np.ones((1, 1), np.float32)
    step = CountingStep(rt._run)
    deltas = withheld_deltas(step, obs, elapsed, state, memory=memory)
    for name in normal:  # HR and MAP posted now, lactate and platelets carried from an hour ago
        assert deltas[0, INDEX[name]] == 0.0
    assert deltas[0, INDEX["Resp"]] > 0  # RR 28 against 16
    # no variant is run for them: the row itself + Resp + the 5 administrative columns
    assert step.calls == [1 + 1 + len(ADMISSION)]


def test_a_carried_value_is_replaced_at_its_age_in_every_member(shipped):
    rt, memory = shipped
    state = history(rt, [{"HR": 90, "Lactate": 4.8}, {"HR": 95}])
    obs = row({"HR": 100, "Resp": 24}, 3)[None]
    elapsed = np.ones((1, 1), np.float32)
    deltas = withheld_deltas(rt._run, obs, elapsed, state, memory=memory)
    lactate = INDEX["Lactate"]
    by_hand = state.copy()
    by_hand[:, np.arange(5) * 291 + lactate] = NORMAL[lactate]  # the last value only: age and count kept
    expected = rt.step(obs, elapsed, state).risk[0] - rt.step(obs, elapsed, by_hand).risk[0]
    assert deltas[0, lactate] != 0.0 and deltas[0, lactate] == pytest.approx(expected, abs=1e-6)
    # its age is what the step will read after this hour: measured at hour 1, read at hour 3
    assert latest_ages(obs, elapsed, state, memory)[0, lactate] == pytest.approx(2.0)
    assert latest_ages(obs, elapsed, state, memory)[0, INDEX["HR"]] == 0.0


def test_septic_shock_hypotension_and_tachycardia_raise_the_risk(shipped):
    rt, memory = shipped
    risk, deltas, top = explain_last_hour(rt, memory, [
        {**NORMAL_VITALS, "HR": 95},
        {"HR": 108, "MAP": 70, "Resp": 22, "Temp": 38.2},
        {"Lactate": 6.8, "WBC": 23, "Creatinine": 2.6, "Platelets": 85, "pH": 7.22, "HCO3": 16,
         "Bilirubin_total": 2.4},
        {"HR": 126, "O2Sat": 92, "Temp": 38.9, "SBP": 77, "MAP": 56, "DBP": 45, "Resp": 31},
    ])
    assert risk > rt.threshold
    for name in ("HR", "SBP", "MAP", "Temp", "Resp", "WBC", "Creatinine", "Platelets"):
        assert deltas[INDEX[name]] > 0, name
    assert top[0]["feature"] == "Temp" and top[0]["system"] != "administrative"
    assert all(c["system"] != "administrative" for c in top)
    # measured on sepsis-cfc/3 (CPU): Temp +3.7, Lactate -2.8, Resp +2.1, WBC +1.8, DBP +1.3 points.
    # Lactate 6.8 (an hour old) lowers the risk against a normal 1.0: that is the model itself,
    # which moves the wrong way on lactate in a third of patients (results/sepsis/plausibility/).
    assert deltas[INDEX["Lactate"]] < 0
    assert {c["feature"]: c["hours_since"] for c in top}["Lactate"] == 1.0


def test_isolated_fever_is_the_reason(shipped):
    rt, memory = shipped
    risk, deltas, top = explain_last_hour(rt, memory, [
        NORMAL_VITALS, NORMAL_LABS, {**NORMAL_VITALS, "Temp": 39.3}])
    assert top[0]["feature"] == "Temp" and top[0]["value"] == 39.3 and top[0]["delta"] > 0.005
    # every other clinical value is near its reference: each moves the risk by under a point
    others = np.abs(np.delete(deltas[:34], INDEX["Temp"]))
    assert others.max() < 0.01


def test_a_healthy_post_operative_patient_has_only_small_reasons(shipped):
    rt, memory = shipped
    risk, deltas, top = explain_last_hour(rt, memory, [
        NORMAL_VITALS, NORMAL_LABS, {**NORMAL_VITALS, "HR": 82, "MAP": 84}])
    assert risk < rt.threshold
    assert np.abs(deltas[:34]).max() < 0.002  # no clinical value moves the risk by 0.2 points
    assert all(abs(c["delta"]) < 0.005 for c in top)


@pytest.fixture(scope="module", params=["5", "4"])
def default_model(request):
    """sepsis-cfc/5, the registry's default (the model the ward's reasons come from), and /4 before it."""
    rt = StepRuntime.open(SHIPPED / request.param, device="cpu", intra_op_threads=1)
    return rt, find_memory(rt._run, rt.state_size)


def test_the_registry_default_is_the_one_the_ward_reasons_are_tested_on():
    from models.registry import resolve

    assert resolve(root=SHIPPED.parent).version == "5"


SHOCK = [{**NORMAL_VITALS, "HR": 95}, {"HR": 108, "MAP": 70, "Resp": 22, "Temp": 38.2},
         {"Lactate": 6.8, "WBC": 23, "Creatinine": 2.6, "Platelets": 85, "pH": 7.22, "HCO3": 16, "Bilirubin_total": 2.4},
         {"HR": 126, "O2Sat": 92, "Temp": 38.9, "SBP": 77, "MAP": 56, "DBP": 45, "Resp": 31}]


# Per model, the shock picture's values whose contribution raises the risk. Measured (CPU), in points:
# sepsis-cfc/4: Temp +1.09, Platelets +0.66, SBP +0.52, O2Sat +0.42, then Lactate 6.8 (an hour old) -0.34:
#   single-variable replacement reads that lactate backwards beside pH 7.22 and HCO3 16.
# sepsis-cfc/5: HR +3.94, Platelets +3.01, Resp +2.55, Creatinine +2.00, SBP +1.44; lactate +0.37, MAP +1.24,
#   WBC +0.76, but the fever of 38.9 -0.70: its boosters are free in temperature and read it backwards in
#   this context (results/sepsis/blend/RULE.md, amendment; the variant that constrains it missed the rule).
RAISING = {"4": ("HR", "SBP", "Temp", "Resp", "Platelets", "pH"),
           "5": ("HR", "SBP", "MAP", "Resp", "Platelets", "pH", "Lactate", "WBC", "Creatinine")}


def test_the_default_model_on_clinically_constructed_patients(default_model):
    """The issue's ward picture of septic shock alarms, with clinical reasons that raise the risk
    leading; an isolated fever is its own reason; a healthy post-operative patient has none worth a
    tenth of a point (`RAISING` has what each model reads the physiological way, as measured)."""
    rt, memory = default_model
    risk, deltas, top = explain_last_hour(rt, memory, SHOCK)
    assert risk > rt.threshold
    leading = 5 if rt.card.version == "5" else 4
    assert all(c["system"] != "administrative" and c["delta"] > 0 for c in top[:leading])
    for name in RAISING[rt.card.version]:
        assert deltas[INDEX[name]] > 0, name
    risk, deltas, top = explain_last_hour(rt, memory, [NORMAL_VITALS, NORMAL_LABS, {**NORMAL_VITALS, "Temp": 39.3}])
    assert top[0]["feature"] == "Temp" and top[0]["delta"] > 0.001
    assert np.abs(np.delete(deltas[:34], INDEX["Temp"])).max() < 0.001
    risk, deltas, top = explain_last_hour(rt, memory, [NORMAL_VITALS, NORMAL_LABS, {**NORMAL_VITALS, "HR": 82, "MAP": 84}])
    assert risk < rt.threshold and np.abs(deltas[:34]).max() < 0.001


def test_withholding_the_only_measurement_of_a_row_holds_the_previous_risk(shipped):
    rt, memory = shipped
    before = rt.new_state(1)
    first = row({"HR": 90, "Resp": 18, "Age": 60}, 1)[None]
    previous = rt.step(first, [0.0], before)
    obs = row({"HR": 135, "Age": 60}, 2)[None]  # HR is the only vital or lab posted
    elapsed = np.ones((1, 1), np.float32)
    risk = rt.step(obs, elapsed, previous.next_state).risk[0]
    deltas = withheld_deltas(rt._run, obs, elapsed, previous.next_state, memory=memory, baseline="missing")
    # sepsis-cfc/3 holds its risk on a row without a vital or lab: the delta is the change since then
    assert deltas[0, INDEX["HR"]] == pytest.approx(risk - previous.risk[0], abs=1e-6)
    assert deltas[0, INDEX["HR"]] != 0.0


def test_not_measured_for_long_is_a_reason_of_its_own(shipped):
    rt, memory = shipped
    # platelets 30 h ago, WBC 2 h ago, lactate never; HR every hour
    hours = [{**ADMISSION, "HR": 90, "Platelets": 80}] + [{**ADMISSION, "HR": 95}] * 27 + \
            [{**ADMISSION, "HR": 100, "WBC": 15}, {**ADMISSION, "HR": 105}]
    state = history(rt, hours)
    obs = row({**ADMISSION, "HR": 110, "Resp": 26}, len(hours) + 1)[None]
    elapsed = np.ones((1, 1), np.float32)
    ages = latest_ages(obs, elapsed, state, memory)[0]
    assert (ages[INDEX["Platelets"]], ages[INDEX["WBC"]]) == (30.0, 2.0) and np.isnan(ages[INDEX["Lactate"]])
    step = CountingStep(rt._run)
    deltas = unmeasured_deltas(step, obs, elapsed, state, memory=memory)
    as_posted = rt.step(obs, elapsed, state).risk[0]
    for name in ("Lactate", "Platelets"):  # never, and longer than 24 h ago: against the reference measured now
        now = obs.copy()
        now[0, INDEX[name]] = NORMAL[INDEX[name]]
        assert deltas[0, INDEX[name]] == pytest.approx(as_posted - rt.step(now, elapsed, state).risk[0], abs=1e-6)
        assert deltas[0, INDEX[name]] != 0.0
    # recent (WBC), posted now (HR, Resp) and administrative columns: 0, no variant
    for name in ("WBC", "HR", "Resp", "Age", "HospAdmTime", "ICULOS"):
        assert deltas[0, INDEX[name]] == 0.0
    never_or_stale = 34 - 2 - 1  # every vital and lab but the two posted and the recent WBC
    assert step.calls == [1 + never_or_stale]
    top = top_contributions(deltas[0], latest_values(obs, state, memory)[0], k=40, ages_row=ages)
    shown = {c["feature"]: (c["value"], c["hours_since"]) for c in top}
    assert shown["Platelets"] == (80.0, 30.0) and shown["Lactate"] == (None, None)
    # limited to the 13 sepsis-defining variables (the service's GAP_COLUMNS): the same deltas there, fewer variants
    step.calls.clear()
    limited = unmeasured_deltas(step, obs, elapsed, state, memory=memory, columns=GAP_COLUMNS)
    assert np.array_equal(limited[0, GAP_COLUMNS], deltas[0, GAP_COLUMNS])
    assert not limited[0, ~GAP_COLUMNS].any() and deltas[0, INDEX["Fibrinogen"]] != 0.0
    assert GAP_COLUMNS.sum() == 13 and step.calls == [1 + 13 - 2 - 1]  # HR and Resp posted, WBC recent
    with pytest.raises(ValueError, match="memory"):
        unmeasured_deltas(rt._run, obs, elapsed, state, memory=None)
    with pytest.raises(ValueError, match="columns"):
        unmeasured_deltas(rt._run, obs, elapsed, state, memory=memory, columns=GAP_COLUMNS[:39])


def test_a_system_is_replaced_together(default_model):
    """A system with one value behind it equals that value's own contribution; the septic-shock
    blood pressures replaced together (HR, SBP, MAP, DBP against 80, 120, 85, 75) raise the risk,
    whatever MAP alone does beside an SBP of 77."""
    from models.explain import CLINICAL_SYSTEMS, system_deltas

    rt, memory = default_model
    state = history(rt, [{**ADMISSION, "HR": 90}])
    obs = row({**ADMISSION, "HR": 128, "Temp": 38.9}, 2)[None]
    elapsed = np.ones((1, 1), np.float32)
    one = withheld_deltas(rt._run, obs, elapsed, state, memory=memory)[0]
    systems = system_deltas(rt._run, obs, elapsed, state, memory=memory)[0]
    assert systems[CLINICAL_SYSTEMS.index("cardiovascular")] == pytest.approx(one[INDEX["HR"]], abs=1e-6)
    assert systems[CLINICAL_SYSTEMS.index("inflammation")] == pytest.approx(one[INDEX["Temp"]], abs=1e-6)
    assert systems[CLINICAL_SYSTEMS.index("renal")] == 0.0  # nothing to replace
    systems = system_deltas(rt._run, *last_hour(rt, SHOCK), memory=memory)[0]
    assert systems[CLINICAL_SYSTEMS.index("cardiovascular")] > 0.004
