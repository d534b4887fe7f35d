"""Every alarm figure pinned on constructed stays (onset 100 unless said: window [88, 103])."""
import datetime as dt

import pytest

from models.alarm_figures import (Stay, TimedAlarm, catching_alarm, figures, open_hours, stay_from_timestamps,
                                  verdict, verdict_at)
from models.alarm_policy import AlarmEvent


def alarm(t, closed=None, kind="raised", by="resolved"):
    return AlarmEvent(time=t, kind=kind, risk=0.5, closed_at=closed, closed_by=None if closed is None else by)


def septic(*alarms, onset=100.0, hours=120.0):
    return Stay(hours=hours, alarms=tuple(alarms), septic=True, onset=onset)


def test_caught_in_time_means_raised_in_the_window_or_still_open_when_it_begins():
    assert catching_alarm(septic(alarm(88, 90))).time == 88           # the window's first hour
    assert catching_alarm(septic(alarm(103, 104))).time == 103        # its last
    assert catching_alarm(septic(alarm(104, 106))) is None            # too late
    assert catching_alarm(septic(alarm(60, 87))) is None              # early, quiet before the window
    assert catching_alarm(septic(alarm(60, 89))).time == 60           # early, still open in it
    assert catching_alarm(septic(alarm(60))).time == 60               # early, never closed
    assert catching_alarm(septic(alarm(60, 62, by="acknowledge"), alarm(95, 96))).time == 95
    assert catching_alarm(Stay(hours=120, alarms=(alarm(95),), septic=False)) is None


def test_the_window_figures_and_the_before_onset_line_differ_as_defined():
    early_quiet = septic(alarm(20, 21))          # any time before onset: yes; in the window: no
    in_window = septic(alarm(90, 92))            # both; lead 10 h
    held = septic(alarm(70, 95))                 # early and still open: caught, lead 30 h
    missed = septic()                            # no alarm at all
    f = figures([early_quiet, in_window, held, missed])
    assert f.septic == 4
    assert f.caught_in_window == 2 / 4 and f.septic_caught_in_window == 2
    assert f.median_lead_time_in_window_hours == 20.0   # median of 10 and 30
    assert f.sensitivity == 3 / 4
    assert f.median_lead_time_hours == 30.0             # median of 80, 10, 30


def test_ppv_per_stay_and_per_alarm_count_different_things():
    true_twice = septic(alarm(90, 91), alarm(95, 96))                         # two true alarms
    septic_false = septic(alarm(10, 11), onset=100.0)                         # septic stay, false alarm
    quiet = Stay(hours=48, septic=False)
    noisy = Stay(hours=48, alarms=(alarm(1, 2), alarm(5, 6), alarm(9, 10)), septic=False)
    unknown = Stay(hours=48, alarms=(alarm(3, 4),), septic=None)              # no outcome yet
    f = figures([true_twice, septic_false, quiet, noisy, unknown])
    assert (f.true_alarms, f.false_alarms) == (2, 4)
    assert f.ppv_alarms == 2 / 6                 # the unknown stay's alarm is left out
    assert f.ppv == 2 / 3                        # stays alarmed: two septic, one not (unknown left out)
    assert f.non_septic_alarmed == 1 / 2
    assert f.alarms == 7                         # the burden counts every alarm sent
    assert verdict(unknown, unknown.alarms[0]) == "unknown"


def test_alarms_per_patient_day_and_red_share():
    a = Stay(hours=48, alarms=(alarm(0, 6), alarm(10, 12, kind="re-alert: lockout ended")), septic=False)
    b = Stay(hours=24, alarms=(alarm(20),), septic=False)         # open to the end of the stay: 4 h
    f = figures([a, b])
    assert f.patient_days == 3.0
    assert f.alarms_per_patient_day == 1.0
    assert f.alarms_by_kind["raised"] == 2 and f.alarms_by_kind["re-alert: lockout ended"] == 1
    assert open_hours(a) == 8 and open_hours(b) == 4
    assert f.red_share == 12 / 72


def test_nothing_to_share_is_none_not_zero():
    f = figures([Stay(hours=10, septic=False)])
    assert f.caught_in_window is None and f.ppv is None and f.ppv_alarms is None
    assert f.median_lead_time_in_window_hours is None and f.alarms_per_patient_day == 0.0
    assert figures([]).alarms_per_patient_day is None


def test_a_septic_stay_needs_its_onset():
    with pytest.raises(ValueError, match="onset"):
        Stay(hours=1, septic=True)


# ---------------------------------------------------------------- the service's timestamps

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
H = dt.timedelta(hours=1)


def test_the_service_verdict_is_the_window_on_datetimes():
    onset = T0 + 100 * H
    assert verdict_at(onset - 12 * H, "sepsis", onset) == "true"
    assert verdict_at(onset + 3 * H, "sepsis", onset) == "true"
    assert verdict_at(onset + 3 * H + dt.timedelta(seconds=1), "sepsis", onset) == "false"
    assert verdict_at(onset - 12 * H - dt.timedelta(seconds=1), "sepsis", onset) == "false"
    assert verdict_at(onset, "no_sepsis", None) == "false"
    assert verdict_at(onset, None, None) == "unknown"


def test_stays_from_timestamps_give_the_same_figures_as_stays_in_hours():
    onset = T0 + 100 * H
    timed = stay_from_timestamps(T0, 120.0, [TimedAlarm(T0 + 95 * H, closed_at=T0 + 96 * H),
                                             TimedAlarm(T0 + 70 * H, closed_at=T0 + 89 * H)],
                                 "sepsis", onset)
    hours = septic(alarm(70, 89), alarm(95, 96))
    assert [a.time for a in timed.alarms] == [70.0, 95.0]   # put in time order
    assert figures([timed]) == figures([hours])
    assert stay_from_timestamps(T0, 5.0, [], None, None).septic is None
    assert stay_from_timestamps(T0, 5.0, [], "no_sepsis", None).septic is False
