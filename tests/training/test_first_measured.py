"""A stay is monitored from its first measured hour (models.alarm_figures): hours before it, where
the risk comes from the demographics alone, raise no alarm and count in no figure. So a stay with
leading empty hours has exactly the figures of the same stay without them, through every offline
producer (`ward_simulation.ward_figures`, `metrics.alarm_metrics`, `operating_points.Scored`)."""
from __future__ import annotations

import numpy as np
import pytest

from models.alarm_figures import first_measured, measured
from models.alarm_policy import SILENT_FOR_GOOD, AlarmPolicy
from models.contract import INDEX, N_FEATURES
from training.sepsis import metrics as M
from training.sepsis import ward_simulation as W
from training.sepsis.operating_points import Scored

PAD = 4  # empty hours before the first measured one
HIGH = 0.9  # their risk: above the threshold, from the demographics alone


def stays():
    """Two stays, each as measured and with PAD empty hours before: (labels, risks) lists."""
    septic = np.zeros(40, np.int8)
    septic[30:] = 1  # onset at hour 36
    quiet = np.zeros(30, np.int8)
    r1 = np.full(40, 0.05)
    r1[[3, 4, 20, 21, 22, 27, 28, 29, 30]] = 0.6
    r2 = np.full(30, 0.05)
    r2[[10, 11]] = 0.7
    labels, risks = [septic, quiet], [r1, r2]
    pad = lambda x, v: np.concatenate([np.full(PAD, v, x.dtype), x])  # noqa: E731
    return labels, risks, [pad(x, 0) for x in labels], [pad(x, HIGH) for x in risks]


def test_first_measured_is_the_first_row_with_a_vital_sign_or_lab():
    values = np.full((9, N_FEATURES), np.nan, np.float32)
    values[:, INDEX["Age"]] = 70.0   # demographics on every row do not count
    values[:, INDEX["ICULOS"]] = np.arange(1, 10)
    values[2, INDEX["HR"]] = 80.0    # stay 0 (rows 0-3): row 2
    values[4, INDEX["Lactate"]] = 2.0  # stay 1 (rows 4-5): row 0
    # stay 2 (rows 6-8): nothing measured, never monitored
    assert first_measured(values, np.array([0, 4, 6, 9])).tolist() == [2, 0, 3]
    assert measured({"HR": 80.0}) and measured({"Age": 70.0, "WBC": 9.0})
    assert not measured({}) and not measured({"Age": 70.0, "Gender": 1.0, "Unit1": 1.0, "HospAdmTime": -2.0})


@pytest.mark.parametrize("scenario", W.SCENARIOS)
def test_leading_empty_hours_change_no_ward_figure(scenario):
    labels, risks, padded_labels, padded_risks = stays()
    policy = AlarmPolicy(0.5, lockout_hours=6.0)
    plain = W.ward_figures(labels, risks, policy, scenario).as_dict()
    assert W.ward_figures(padded_labels, padded_risks, policy, scenario, starts=[PAD, PAD]).as_dict() == plain
    # without the rule the empty hours alarm and count
    unruled = W.ward_figures(padded_labels, padded_risks, policy, scenario).as_dict()
    assert unruled["alarms"] > plain["alarms"] and unruled["patient_days"] > plain["patient_days"]


def test_leading_empty_hours_change_no_alarm_metric_nor_table_figure():
    labels, risks, padded_labels, padded_risks = stays()
    plain = M.alarm_metrics(labels, risks, 0.5)
    assert M.alarm_metrics(padded_labels, padded_risks, 0.5, starts=[PAD, PAD]) == plain
    assert M.alarm_metrics(padded_labels, padded_risks, 0.5)["n_alarm_episodes"] > plain["n_alarm_episodes"]
    policy = W.AlarmPolicy(0.5, **SILENT_FOR_GOOD)
    assert W.dismissed_early(padded_labels, padded_risks, policy, starts=[PAD, PAD]) == W.dismissed_early(
        labels, risks, policy)
    # the table's figures too, but the utility: it scores every row, as the challenge does
    from models.operating_points import AlarmPolicySettings
    settings = AlarmPolicySettings(rise_factor=None, lockout_hours=12.0, tiers=[], chosen_by="this test")
    table = Scored(padded_labels, padded_risks, [PAD, PAD]).figures(0.5, settings)
    unpadded = Scored(labels, risks).figures(0.5, settings)
    assert {k: v for k, v in table.items() if k != "utility"} == {k: v for k, v in unpadded.items() if k != "utility"}


def test_an_onset_before_the_first_measured_hour_stays_the_stays():
    """The onset comes from the labels, on the stay's clock: a stay labelled from its first row is
    septic with that onset, whenever monitoring began; it is caught only by a later alarm."""
    lab = np.ones(20, np.int8)  # onset at hour 6
    r = np.full(20, 0.05)
    r[:3] = HIGH  # demographics only
    r[8] = 0.6
    stay = W.hourly_stay(lab, r, AlarmPolicy(0.5), "none", start=3)
    assert (stay.septic, stay.onset, stay.hours, stay.start) == (True, 6.0, 17.0, 3.0)
    assert [a.time for a in stay.alarms] == [8.0]
    with pytest.raises(ValueError, match="start"):
        W.hourly_stay(lab, r, AlarmPolicy(0.5), "none", start=21)
