"""The pure transforms behind the pages: ward order and clock, gaps in vitals, lead times, burden (and its
chart's marks of each operating-point period)."""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt

import pytest

from dashboard import charts, tiles, transforms
from dashboard.client import Alarm, PatientSummary, PeriodFigures, TimelineEntry

T0 = dt.datetime(2024, 5, 1, 0, 0, tzinfo=dt.timezone.utc)
H = dt.timedelta(hours=1)


def patient(pid, risk=None, last=None, first=None, outcome=None, onset=None, n=1, status=None,
            measured_from=None) -> PatientSummary:
    """`measured_from`: the first measured hour's start (default: the first observation's)."""
    status = status or {"sepsis": "in_treatment", "no_sepsis": "discharged"}.get(outcome, "monitoring")
    return PatientSummary(patient_id=pid, first_observation=first, last_observation=last, n_observations=n,
                          last_risk=risk, active_alarm_id=None, outcome=outcome, onset_time=onset, icu_admit_time=None,
                          status=status, first_measured=measured_from or first)


def alarm(aid, pid, raised, state="open", verdict="unknown", snoozed_until=None) -> Alarm:
    return Alarm(id=aid, patient_id=pid, raised_at=raised, risk=0.9, threshold=0.5, model_name="m", model_version="1",
                 state=state, verdict=verdict, snoozed_until=snoozed_until)


def entry(hour: float, risk: float, **vitals) -> TimelineEntry:
    return TimelineEntry(timestamp=T0 + hour * H, vitals=vitals, risk=risk, alarm=False, alarm_id=None, model="m",
                         model_version="1")


def test_ward_rows_alarms_first_then_by_risk_only_monitored():
    ps = [patient("a", 0.2, T0), patient("b", 0.9, T0 - 2 * H), patient("c", None), patient("d", 0.99, T0, outcome="no_sepsis"),
          patient("e", 0.5, T0), patient("f", 0.3, T0, outcome="sepsis"), patient("g", 0.01, T0)]
    rows = transforms.ward_rows(ps, [alarm(1, "b", T0 - 5 * H, "acknowledged"), alarm(2, "b", T0, "snoozed",
                                                                                      snoozed_until=T0 + H),
                                     alarm(3, "d", T0), alarm(4, "g", T0)], clock=T0)
    # g's open alarm comes first although its risk is the lowest; b's alarm is in hand; d discharged: gone
    assert [r.patient_id for r in rows] == ["g", "b", "e", "f", "a", "c"]
    assert rows[3].status == "in_treatment"  # confirmed sepsis stays on the ward, in treatment
    assert 'in treatment' in tiles.tile_html(rows[3], [], 0.5, transforms.tile_look(rows[3], 0.5, T0), unit=None)
    assert rows[1].alarm_state == "snoozed" and rows[1].alarm_id == 2  # the newest active alarm wins
    assert rows[1].hours_since == 2.0 and rows[-1].hours_since is None


def test_unacknowledged_alarms_fill_the_first_page_whatever_its_size():
    """50 quiet high-risk patients and 3 open alarms of low risk: page 1 of any size >= 3 holds all 3."""
    ps = [patient(f"q{i:02}", 0.5 + i / 200, T0) for i in range(50)] + [patient(f"x{i}", 0.01 * i, T0) for i in range(3)]
    al = [alarm(10 + i, f"x{i}", T0) for i in range(3)]
    al.append(alarm(20, "q00", T0, "snoozed", snoozed_until=T0 - H))  # a snooze that has run out is loud again
    rows = transforms.ward_rows(ps, al, clock=T0)
    loud = {r.patient_id for r in rows if transforms.alarm_is_loud(r, T0)}
    assert loud == {"x0", "x1", "x2", "q00"}
    for size in (4, 6, 24):
        assert loud <= {r.patient_id for r in rows[:size]}


def test_since_last_observation_counts_from_the_last_measured_value():
    p = PatientSummary(patient_id="m", first_observation=T0, last_observation=T0 + 3 * H, n_observations=4,
                       last_risk=0.1, active_alarm_id=None, outcome=None, onset_time=None, icu_admit_time=None,
                       last_measured=T0 + H)  # the last two posts carried no values
    assert transforms.ward_rows([p], [], clock=T0 + 3 * H)[0].hours_since == 2.0
    assert tiles.since_text(2.0) == "2.0 h since last observation" and tiles.since_text(0.25) == "15 min since last observation"


def test_one_colour_rule_alarm_state_first_then_risk_against_the_threshold():
    def look(risk, state=None, until=None):
        row = transforms.ward_rows([patient("p", risk, T0)],
                                   [alarm(1, "p", T0, state, snoozed_until=until)] if state else [], clock=T0)[0]
        return transforms.tile_look(row, 0.04, T0).css

    assert look(0.001, "open") == "alarm-open"          # an open alarm is red whatever the risk now
    assert look(0.001, "snoozed", T0 - H) == "alarm-open"
    assert look(0.9, "acknowledged") == "alarm-held" and look(0.9, "snoozed", T0 + H) == "alarm-held"
    assert look(0.04) == "risk-high" and look(0.9) == "risk-high"
    assert look(0.02) == "risk-mid" and look(0.0399) == "risk-mid"
    assert look(0.0199) == "risk-low" and look(None) == "risk-none"
    assert [css for css, _ in transforms.COLOUR_RULE] == ["alarm-open", "alarm-old", "alarm-held", "no-data",
                                                           "risk-high", "risk-mid", "risk-low", "risk-none"]


def test_ward_clock_follows_a_feed_that_runs_ahead_of_the_wall_clock():
    assert transforms.ward_clock([patient("a", last=T0 + 30 * H)], now=T0) == T0 + 30 * H
    assert transforms.ward_clock([patient("a", last=T0 - 30 * H)], now=T0) == T0


def test_loud_alarm_is_open_or_an_expired_snooze():
    rows = transforms.ward_rows([patient("a", .5, T0), patient("b", .5, T0), patient("c", .5, T0)],
                                [alarm(1, "a", T0), alarm(2, "b", T0, "snoozed", snoozed_until=T0 + H),
                                 alarm(3, "c", T0, "snoozed", snoozed_until=T0 - H)], clock=T0)
    loud = {r.patient_id: transforms.alarm_is_loud(r, T0) for r in rows}
    assert loud == {"a": True, "b": False, "c": True}


def test_vitals_lines_break_where_a_value_was_not_measured():
    tl = [entry(0, .1, HR=80, Lactate=2), entry(1, .2, HR=82), entry(2, .3), entry(3, .4, HR=90, Lactate=3)]
    df = transforms.vitals_frame(tl)
    hr = df[df.variable == "HR"]
    assert list(hr.value) == [80, 82, 90]
    assert hr.segment.nunique() == 2 and hr.segment.iloc[0] == hr.segment.iloc[1] != hr.segment.iloc[2]
    assert transforms.measured_variables(tl) == ["HR", "Lactate"]  # vitals before labs
    cov = transforms.coverage_frame(tl)
    assert list(cov[cov.variable == "Lactate"].measured) == [True, False, False, True]
    assert list(cov[cov.variable == "HR"].hour) == [0, 1, 2, 3]


def test_doubtful_values_newest_first_and_at_most_five():
    tl = [dataclasses.replace(entry(h, .1, Temp=98.6), warnings={"Temp": "98.6 is outside the plausible range"})
          for h in range(7)] + [entry(7, .1, Temp=37.0)]
    lines = transforms.doubtful_values(tl)
    assert len(lines) == 5 and lines[0].startswith(f"Temp at {T0 + 6 * H:%Y-%m-%d %H:%M} UTC: 98.6 is outside")
    assert transforms.doubtful_values(tl[-1:]) == []


def test_trend_keeps_the_last_24_hours():
    tl = [entry(h, h / 100) for h in range(0, 40, 2)]
    pts = transforms.trend(tl)
    assert pts[0][0] == T0 + 14 * H and pts[-1][0] == T0 + 38 * H and len(pts) == 13


def test_lead_time_from_first_true_alarm_of_each_septic_patient():
    onset = T0 + 20 * H
    ps = [patient("s", outcome="sepsis", onset=onset), patient("n", outcome="no_sepsis")]
    al = [alarm(1, "s", T0, verdict="false"), alarm(2, "s", T0 + 12 * H, verdict="true"),
          alarm(3, "s", T0 + 15 * H, verdict="true"), alarm(4, "n", T0, verdict="false")]
    df = transforms.lead_times(al, ps)
    assert df.to_dict("records") == [{"patient_id": "s", "lead_time_hours": 8.0}]
    assert transforms.verdict_counts(al) == {"true": 2, "false": 2, "unknown": 0}


def test_alarm_burden_per_patient_day_by_hour():
    ps = [patient("a", first=T0, last=T0 + 2 * H), patient("b", first=T0 + H, last=T0 + H)]
    bucket, df = transforms.alarm_burden([alarm(1, "a", T0 + 30 * dt.timedelta(minutes=1)), alarm(2, "b", T0 + H)], ps)
    assert bucket == "hour"
    assert list(df.alarms) == [1, 1, 0]
    # hour 0: a only (1 h = 1/24 day); hour 1: a and b; hour 2: a
    assert df.patient_days.tolist() == pytest.approx([1 / 24, 2 / 24, 1 / 24])
    assert df.alarms_per_patient_day.tolist()[:2] == pytest.approx([24.0, 12.0])
    assert transforms.bucket_for(dt.timedelta(days=30))[0] == "day"


def test_alarm_burden_counts_hours_from_the_first_measured_one():
    """As /stats: a patient is monitored from the first vital sign or lab; the empty hours stepped
    before it are no patient-days, and a patient never measured adds none."""
    ps = [patient("a", first=T0, last=T0 + 3 * H, measured_from=T0 + 2 * H),
          patient("e", first=T0, last=T0 + H, measured_from=None)]
    ps[1] = dataclasses.replace(ps[1], first_measured=None)
    _, df = transforms.alarm_burden([alarm(1, "a", T0 + 2 * H)], ps)
    assert sum(df.patient_days) == pytest.approx(2 / 24)  # hours 2 and 3 of "a"


def test_alarm_queue_is_oldest_first_and_filtered_by_state():
    al = [alarm(3, "a", T0 + 2 * H), alarm(1, "b", T0, "snoozed"), alarm(2, "c", T0 + H, "acknowledged")]
    assert [a.id for a in transforms.alarm_queue(al)] == [1, 3]
    assert [a.id for a in transforms.alarm_queue(al, ("open", "snoozed", "acknowledged"))] == [1, 2, 3]


def test_tile_marks_an_open_alarm_and_escapes_ids():
    row = transforms.ward_rows([patient("x<1>", 0.73, T0)], [alarm(1, "x<1>", T0)], clock=T0 + H)[0]
    html = tiles.tile_html(row, [(T0, 0.2), (T0 + H, 0.73)], 0.5, transforms.tile_look(row, 0.5, T0 + H), unit="MICU")
    assert 'class="tile alarm-open"' in html and "ALARM" in html and "73%" in html and "x&lt;1&gt;" in html
    assert "href" not in html and "1.0 h since last observation" in html  # the page link is a Streamlit one
    assert "raised at 90.0%, 1.0 h ago" in html  # why it is red when the risk has since changed
    svg = base64.b64decode(html.split("base64,")[1].split('"')[0]).decode()
    assert "<polyline" in svg and "stroke-dasharray" in svg  # the trend and the threshold line
    calm_row = transforms.ward_rows([patient("y", 0.1, T0)], [], T0)[0]
    calm = tiles.tile_html(calm_row, [], 0.5, transforms.tile_look(calm_row, 0.5, T0), unit=None)
    assert 'class="tile risk-low"' in calm and "ALARM" not in calm and "RE-ALERT" not in html
    # a re-alert looks different from a first alarm: its own badge says why it came back
    again = dataclasses.replace(alarm(2, "x<1>", T0), kind="re-alert: lockout ended", previous_alarm_id=1)
    row = transforms.ward_rows([patient("x<1>", 0.73, T0)], [again], clock=T0 + H)[0]
    html = tiles.tile_html(row, [], 0.5, transforms.tile_look(row, 0.5, T0 + H), unit=None)
    assert 'class="badge realert">RE-ALERT: lockout ended<' in html


def test_risk_axis_leaves_room_above_the_risks_and_the_threshold():
    assert transforms.risk_axis_top([0.01, 0.02], 0.028) == pytest.approx(0.05)  # floor: never a sliver
    assert transforms.risk_axis_top([0.01, 0.2], 0.028) == pytest.approx(0.25)
    assert transforms.risk_axis_top([0.3], 0.5) == pytest.approx(0.625)  # the threshold stays in view
    assert transforms.risk_axis_top([0.95], None) == 1.0


def test_sparkline_of_small_calibrated_risks_uses_its_height():
    """Risks of a few percent must still show their trend, with the threshold line in view."""
    import re

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    points = [(t0 + dt.timedelta(hours=h), r) for h, r in enumerate([0.005, 0.01, 0.02, 0.04])]
    svg = tiles.sparkline_svg(points, threshold=0.028, height=36)
    ys = [float(y) for y in re.findall(r"[\d.]+,([\d.]+)", re.search(r'points="([^"]+)"', svg).group(1))]
    assert ys[0] - ys[-1] > 20  # the rise fills most of the 32 px drawing height
    line_y = float(re.search(r'y1="([\d.]+)"', svg).group(1))
    assert min(ys) < line_y < max(ys)  # the threshold sits between the lowest and the highest risk


def test_numbers_are_written_as_people_write_them():
    assert [transforms.fmt_number(v) for v in (100.0, 120.0, 1200.0, 37.25, 4.8, 0.05, 0.0, None, float("nan"))] == \
        ["100", "120", "1,200", "37.2", "4.8", "0.05", "0", "not recorded", "not recorded"]
    assert all("e" not in transforms.fmt_number(v) for v in (1e2, 1e5, 1e-3))
    assert [transforms.fmt_age(h) for h in (0.25, 3.52, 50.0, None)] == ["15 min ago", "3.5 h ago", "2.1 days ago",
                                                                         "time unknown"]
    assert transforms.fmt_duration(90) == "1.5 h" and transforms.fmt_duration(12) == "12 min"


def test_contributions_and_bedside_in_words():
    from dashboard.client import Contribution

    assert transforms.contribution_text(Contribution("Lactate", 4.8, 0.031)) == "Lactate 4.8 raised the risk by 3.1 points"
    assert transforms.contribution_text(Contribution("MAP", 70.0, -0.0004)) == "MAP 70 lowered the risk by 0.04 points"
    # with the service's reference and age: a carried value says how old it is and what normal is
    assert transforms.contribution_text(Contribution("Lactate", 4.8, 0.031, reference=1.0, hours_since=3.0)) == \
        "Lactate 4.8 (measured 3.0 h before; normal 1) raised the risk by 3.1 points"
    assert transforms.contribution_text(Contribution("MAP", 57.0, 0.02, reference=85.0, hours_since=0.0)) == \
        "MAP 57 (normal 85) raised the risk by 2.0 points"
    # with the unit the service gives: on the value and the normal value
    assert transforms.contribution_text(Contribution("Lactate", 4.8, 0.031, reference=1.0, hours_since=3.0,
                                                     unit="mmol/L")) == \
        "Lactate 4.8 mmol/L (measured 3.0 h before; normal 1 mmol/L) raised the risk by 3.1 points"
    assert transforms.contribution_text(Contribution("Platelets", 80.0, 0.012, reference=250.0, hours_since=31.0,
                                                     unit="10^3/uL", basis="not measured")) == \
        "Platelets not measured for 31.0 h (last 80 10^3/uL; normal 250 10^3/uL): a normal value now would lower " \
        "the risk by 1.2 points"
    assert transforms.contribution_text(Contribution("Age", 80.0, 0.01)) == "Age 80 raised the risk by 1.0 points"
    bedside = {"qsofa": {"score": 1, "evaluated": 2, "of": 3, "criteria": [
        {"name": "Respiratory rate", "met": True, "value": 32.0, "unit": "breaths/min", "age_hours": 2.0},
        {"name": "Altered mentation", "met": None, "value": None, "note": "not recorded in PhysioNet 2019 data"}]},
        "sofa": {"components": [{"name": "Coagulation", "score": 2, "value": 90.0, "unit": "10^3/uL", "age_hours": 30.0}],
                 "total_available": 2},
        "lactate": None}
    frame = transforms.bedside_frame(bedside)
    assert list(frame["result"]) == ["met", "not assessable", "2 points"]
    assert list(frame["value"]) == ["32 breaths/min", "not measured", "90 10^3/uL"]
    assert frame["note"][1] == "not recorded in PhysioNet 2019 data" and frame["measured"][2] == "30.0 h ago"
    line = transforms.bedside_summary(bedside)
    assert "qSOFA 1 (2 of 3 criteria assessable)" in line and "lactate never measured" in line and "SIRS not served" in line


def test_demographics_are_said_in_full():
    from dashboard.client import PatientDetail

    d = PatientDetail(summary=patient("p", 0.1, T0), unit=None, age=None, gender=0.0, discharged_at=None)
    words = transforms.demographics(d)
    assert "**Age** not recorded" in words and "**Sex** female" in words and "**Unit** not recorded" in words
    assert transforms.risk_words(0.05, 0.04) == "5.0%, at or above the alarm threshold (4.0%)"
    assert transforms.risk_words(0.01, 0.04) == "1.0%, below half of the alarm threshold (4.0%)"
    assert transforms.risk_words(None, 0.04) == "not yet scored"


def test_latest_values_on_a_card_are_grouped_by_age():
    from dashboard.client import LatestValue

    latest = [LatestValue("Lactate", 3.8, "mmol/L", T0, 5.2), LatestValue("HR", 128.0, "beats/min", T0, 0.1),
              LatestValue("Resp", 22.0, "breaths/min", T0, 0.1), LatestValue("WBC", 19.0, "10^3/uL", T0, 0.1),
              LatestValue("Temp", 38.1, "deg C", T0, 7.0, 6.0)]
    vitals, labs = transforms.latest_lines(latest)
    assert vitals == ("**Vitals** HR 128 beats/min · Resp 22 breaths/min (6 min ago); "
                      "Temp 38.1 deg C (7.0 h ago, older than the 6 h window)")
    assert labs == "**Labs** WBC 19 10^3/uL (6 min ago); Lactate 3.8 mmol/L (5.2 h ago)"


def test_an_old_open_alarm_looks_apart_and_says_the_risk_now():
    """An alarm raised 23 h ago on a patient now at 0.4%: still unacknowledged (first on the ward)
    but not the pulsing red of a fresh alarm; the tile says how old and the risk now against the threshold."""
    old, fresh = transforms.ward_rows([patient("o", 0.004, T0), patient("f", 0.2, T0)],
                                      [alarm(1, "o", T0 - 23 * H), alarm(2, "f", T0 - 2 * H)], clock=T0,
                                      alarm_old_hours=6)
    assert (old.patient_id, old.alarm_old, fresh.alarm_old) == ("o", True, False) or \
        (fresh.patient_id, fresh.alarm_old, old.alarm_old) == ("o", True, False)
    rows = {r.patient_id: r for r in (old, fresh)}
    assert transforms.tile_look(rows["o"], 0.051, T0).css == "alarm-old"
    assert transforms.tile_look(rows["f"], 0.051, T0).css == "alarm-open"
    html = tiles.tile_html(rows["o"], [], 0.051, transforms.tile_look(rows["o"], 0.051, T0), unit=None)
    assert "OLD ALARM" in html and "23.0 h ago" in html and "risk now 0.4%, below the 5.1% threshold" in html
    assert ".tile.alarm-old{" in tiles.CSS and "animation" not in tiles.CSS.split(".tile.alarm-old{")[1].split("}")[0]


def test_no_recent_data_is_flagged_per_unit_and_surfaces_patients_in_treatment():
    def p(pid, last, status="monitoring", unit="SICU", risk=0.01, admit=None):
        return PatientSummary(patient_id=pid, first_observation=T0 - 48 * H, last_observation=last, n_observations=3,
                              last_risk=risk, active_alarm_id=None, outcome=None, onset_time=None,
                              icu_admit_time=admit, unit=unit, status=status, last_measured=last)

    limits = {"MICU": 2.0}
    rows = transforms.ward_rows(
        [p("fresh", T0 - H, risk=0.9), p("treated-gone", T0 - 84 * H, "in_treatment"), p("gone", T0 - 7 * H, risk=0.3),
         p("micu-3h", T0 - 3 * H, unit="MICU"), p("just", T0 - 6 * H), p("alarm", T0, risk=0.001),
         p("never", None, admit=T0 - 8 * H)],
        [alarm(1, "alarm", T0)], clock=T0, no_data_after=lambda unit: limits.get(unit, 6.0))
    flagged = {r.patient_id for r in rows if r.no_data}
    assert flagged == {"treated-gone", "gone", "micu-3h", "never"}  # 6 h exactly is not over the limit
    # the open alarm first, then the septic patient nobody sees, then the other quiet ones, then the rest
    assert [r.patient_id for r in rows][:2] == ["alarm", "treated-gone"]
    assert [r.patient_id for r in rows][-2:] == ["fresh", "just"]
    gone = rows[1]
    assert transforms.tile_look(gone, 0.05, T0).css == "no-data"
    html = tiles.tile_html(gone, [], 0.05, transforms.tile_look(gone, 0.05, T0), unit="SICU")
    assert "NO RECENT DATA" in html and 'data-nodata="true"' in html and "3.5 days since last observation" in html


@pytest.mark.parametrize("loud, page, per_page, note", [
    ([True] * 15 + [False] * 10, 1, 6, "6 of 15 open alarms shown; 9 more on pages 2-3"),
    ([True] * 15 + [False] * 10, 2, 6, "6 of 15 open alarms shown; 9 more on pages 1, 3"),
    ([True] * 3 + [False] * 30, 1, 6, "all 3 open alarms shown"),
    ([False] * 7 + [True], 1, 6, "0 of 1 open alarms shown; 1 more on page 2"),
    ([False] * 5, 1, 6, None),
])
def test_pagination_says_how_many_alarms_are_on_other_pages(loud, page, per_page, note):
    assert transforms.pagination_note(loud, page, per_page) == note


def test_critical_values_are_highlighted_from_one_table():
    from dashboard.client import LatestValue
    from dashboard.critical import CRITICAL, critical_rule

    assert critical_rule("O2Sat", 73) == "< 88 % (BTS 2017)" and critical_rule("O2Sat", 88) is None
    assert critical_rule("Lactate", 6.8) == ">= 4 mmol/L (SSC 2021)" and critical_rule("Lactate", 3.9) is None
    assert critical_rule("MAP", 64) and not critical_rule("MAP", 65)
    assert critical_rule("HR", 131) and critical_rule("HR", 40) and not critical_rule("HR", 130)
    assert critical_rule("Temp", 39.1) and critical_rule("Temp", 35.0) and not critical_rule("Temp", 38.0)
    assert critical_rule("Platelets", 49) and critical_rule("pH", 7.1) and not critical_rule("WBC", 40)
    assert all(rule.source for rule in CRITICAL.values())
    latest = [LatestValue("O2Sat", 73.0, "%", T0, 0.5, 6.0), LatestValue("HR", 88.0, "beats/min", T0, 0.5, 6.0),
              LatestValue("Lactate", 6.8, "mmol/L", T0, 2.0, 24.0)]
    frame = transforms.latest_frame(latest)
    assert list(frame.loc[frame["critical"] != "", "variable"]) == ["O2Sat", "Lactate"]
    styles = transforms.critical_styles(frame)
    assert styles.loc[frame["variable"] == "O2Sat", "value"].item() == transforms.CRITICAL_STYLE
    assert styles.loc[frame["variable"] == "HR", "value"].item() == ""
    lines = transforms.latest_lines(latest)
    assert ":red[**O2Sat 73 %**]" in lines[0] and "HR 88 beats/min" in lines[0] and ":red[**HR" not in lines[0]
    assert ":red[**Lactate 6.8 mmol/L**]" in lines[1]


def test_bedside_and_values_table_give_the_same_lactate_with_its_age():
    """The service scores no lactate older than its 24 h window; the line still gives the latest one
    with its age, as the latest-values table does, instead of 'not measured'."""
    from dashboard.client import latest_values

    bedside = {"qsofa": None, "sirs": None, "sofa": None, "lactate": None,
               "latest": [{"feature": "Lactate", "value": 2.7, "unit": "mmol/L", "measured_at": "2024-05-01T00:00:00Z",
                           "age_hours": 37.0, "stale": True, "window_hours": 24.0}]}
    line = transforms.bedside_summary(bedside)
    assert "lactate 2.7 mmol/L, 37.0 h ago (older than the 24 h window)" in line and "not measured" not in line
    table = transforms.latest_frame(latest_values(bedside["latest"]))
    assert table.loc[0, "value"] == "2.7 mmol/L" and table.loc[0, "measured"] == "37.0 h ago, older than the 24 h window"
    fresh = {**bedside, "lactate": {"value": 6.8, "unit": "mmol/L", "age_hours": 1.0}}
    assert ":red[**lactate 6.8 mmol/L**]], 1.0 h ago" in transforms.bedside_summary(fresh)
    assert "lactate never measured" in transforms.bedside_summary({**bedside, "latest": []})


def test_audit_details_are_rounded_for_people():
    assert transforms.details_text({"risk": 0.061674147844314575, "threshold": 0.05, "hours": 2.345678,
                                    "point_id": "utility_optimum", "missing": None}) == \
        "risk 6.2%, threshold 5.0%, hours 2.35, point id utility_optimum"
    assert transforms.round_numbers("raised at risk 0.061674147844314575 by x") == "raised at risk 0.06167 by x"
    assert transforms.round_numbers("bed 12.5, 7") == "bed 12.5, 7"


def test_no_data_limits_per_unit_from_the_environment(monkeypatch):
    from dashboard.config import DashboardSettings

    monkeypatch.setenv("SEPSIS_DASHBOARD_NO_DATA_H", "5")
    monkeypatch.setenv("SEPSIS_DASHBOARD_NO_DATA_H_BY_UNIT", "MICU=3, SICU=8")
    s = DashboardSettings.from_env()
    assert (s.no_data_after("MICU"), s.no_data_after("SICU"), s.no_data_after(None)) == (3.0, 8.0, 5.0)
    monkeypatch.setenv("SEPSIS_DASHBOARD_NO_DATA_H_BY_UNIT", "MICU")
    with pytest.raises(ValueError, match="'MICU' is not UNIT=HOURS"):
        DashboardSettings.from_env()


def test_a_re_alert_says_why_it_came_back_and_a_first_alarm_says_nothing_more():
    assert transforms.alarm_kind_words("raised") is None and transforms.alarm_kind_words(None) is None
    assert transforms.alarm_kind_words("re-alert: lockout ended") == "RE-ALERT: lockout ended"
    assert transforms.alarm_kind_words("escalation: next tier") == "ESCALATION: next tier"


def period(unit, point, threshold, start, end, days, **figures) -> PeriodFigures:
    base = dict(chosen_by=None, patients=1, alarms=0, alarms_per_patient_day=0.0, septic_patients=0,
                septic_patients_alarmed_in_time=0, caught_in_window=None, median_lead_time_hours=None,
                alarmed_before_onset=None, ppv_per_stay=None, positive_predictive_value=None, red_share=0.0)
    return PeriodFigures(unit=unit, point_id=point, threshold=threshold, start=start, end=end, patient_days=days,
                         **{**base, **figures})


def test_periods_frame_gives_each_period_its_own_row_and_figures():
    periods = [period("MICU", None, 0.15, None, T0 + 3 * H, 2.0, alarms=4, alarms_per_patient_day=2.0,
                      septic_patients=2, septic_patients_alarmed_in_time=1, caught_in_window=0.5,
                      median_lead_time_hours=7.0),
               period("MICU", "alarms_per_day_0.2", 0.575, T0 + 3 * H, None, 1.0)]
    frame = transforms.periods_frame(periods)
    assert list(frame["point (threshold)"]) == ["model card (15.0%)", "alarms_per_day_0.2 (57.5%)"]
    assert list(frame["in force (UTC)"]) == ["start to 05-01 03:00", "05-01 03:00 to now"]
    assert list(frame["alarms/pt-day"]) == ["2.00", "0.00"]
    assert list(frame["caught in window"]) == ["50.0% (1/2)", "n/a"] and frame["lead (h)"].iloc[0] == "7.0"


def test_mixed_thresholds_counts_only_periods_with_patient_hours():
    one = period("MICU", None, 0.15, None, None, 2.0)
    assert transforms.mixed_thresholds([one, period("other", "x", 0.5, None, None, 0.0)]) == 1
    assert transforms.mixed_thresholds([one, period("SICU", "x", 0.5, None, None, 0.5)]) == 2


def _switch(unit, start, threshold=0.3):
    return period(unit, None, threshold, start, None, 1.0, cause="model_switch", model="sepsis-cfc", model_version="2")


def test_period_changes_mark_each_start_once_with_what_came_into_force():
    periods = [period("MICU", None, 0.15, None, T0 + H, 1.0), period("MICU", "alarms_per_day_0.2", 0.575, T0 + H, None, 1.0,
                                                                     cause="point_change", model="sepsis-cfc", model_version="1"),
               period("SICU", None, 0.15, None, T0 + 3 * H, 1.0), _switch("SICU", T0 + 3 * H),
               period("other", None, 0.15, None, T0 + 3 * H, 1.0), _switch("other", T0 + 3 * H),
               _switch("SICU", T0 + 30 * H, 0.4)]  # after the span shown: not marked
    frame = transforms.period_changes(periods, T0, T0 + 6 * H)
    assert frame.to_dict("records") == [
        {"time": T0 + H, "label": "MICU alarms_per_day_0.2 (57.5%)"},
        # one model switch changed two units at once: one rule, naming the model it brought in
        {"time": T0 + 3 * H, "label": "sepsis-cfc 2: SICU model card (30.0%), other model card (30.0%)"}]
    assert transforms.period_changes([period("MICU", None, 0.15, None, None, 1.0)], T0, T0 + 6 * H).empty


def _layers_of(chart, mark: str) -> list[list[dict]]:
    """The data rows of each layer of the chart's spec drawn with `mark`."""
    spec = chart.to_dict()
    return [spec["datasets"][layer["data"]["name"]] for layer in spec["layer"]
            if (layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]) == mark]


def test_burden_chart_rules_one_mark_per_period_change_and_none_for_a_single_period():
    ps = [patient("a", first=T0, last=T0 + 5 * H)]
    bucket, burden = transforms.alarm_burden([alarm(1, "a", T0 + H), alarm(2, "a", T0 + 4 * H)], ps)
    periods = [period("MICU", None, 0.15, None, T0 + 2 * H, 1.0), _switch("MICU", T0 + 2 * H),
               period("SICU", None, 0.15, None, T0 + 2 * H + 30 * dt.timedelta(minutes=1), 1.0),
               period("SICU", "x", 0.5, T0 + 2 * H + 30 * dt.timedelta(minutes=1), None, 1.0, cause="point_change")]
    changes = transforms.period_changes(periods, burden["start"].iloc[0], burden["end"].iloc[-1])
    chart = charts.burden_chart(bucket, burden, changes)
    rules, labels = _layers_of(chart, "rule"), _layers_of(chart, "text")
    assert len(rules) == 1 and len(rules[0]) == 2  # one rule per change, where it happened (mid-hour included)
    assert [r["time"] for r in rules[0]] == [(T0 + 2 * H).isoformat(), (T0 + 150 * dt.timedelta(minutes=1)).isoformat()]
    assert [r["label"] for layer in labels for r in layer] == ["sepsis-cfc 2: MICU model card (30.0%)", "SICU x (50.0%)"]
    assert len(_layers_of(chart, "bar")[0]) == 6 and len(_layers_of(chart, "line")) == 1
    one = transforms.period_changes([period("MICU", None, 0.15, None, None, 1.0)], T0, T0 + 6 * H)
    single = charts.burden_chart(bucket, burden, one)
    assert _layers_of(single, "rule") == [] and _layers_of(single, "text") == []


def test_reasons_are_grouped_by_organ_system_beside_their_sofa_component():
    """A septic-shock picture: hypotension leads, so the cardiovascular system comes first with its
    SOFA component beside it; lactate has no SOFA component; the age of the patient, an
    administrative field, comes last although it moved the risk more than the platelets."""
    from dashboard.client import Contribution

    why = [Contribution("MAP", 55.0, 0.031, reference=85.0, hours_since=0.0, system="cardiovascular"),
           Contribution("Lactate", 6.8, 0.024, reference=1.0, hours_since=2.0, system="metabolic/perfusion"),
           Contribution("Age", 81.0, 0.012, system="administrative"),
           Contribution("Platelets", 60.0, 0.006, reference=250.0, hours_since=5.0, system="coagulation"),
           Contribution("HR", 126.0, 0.004, reference=80.0, hours_since=0.0, system="cardiovascular")]
    bedside = {"sofa": {"components": [
        {"name": "Cardiovascular", "score": 1, "feature": "MAP", "value": 55.0},
        {"name": "Coagulation", "score": 2, "feature": "Platelets", "value": 60.0},
        {"name": "Renal", "score": None, "feature": "Creatinine", "value": None}]}}
    lines = transforms.reasons_by_system(why, bedside)
    assert lines == [
        "- **Cardiovascular** (SOFA cardiovascular 1 point, MAP 55)",
        "    - MAP 55 (normal 85) raised the risk by 3.1 points",
        "    - HR 126 (normal 80) raised the risk by 0.4 points",
        "- **Metabolic/perfusion**",
        "    - Lactate 6.8 (measured 2.0 h before; normal 1) raised the risk by 2.4 points",
        "- **Coagulation** (SOFA coagulation 2 points, Platelets 60)",
        "    - Platelets 60 (measured 5.0 h before; normal 250) raised the risk by 0.6 points",
        "- **Administrative**",
        "    - Age 81 raised the risk by 1.2 points"]
    # without bedside scores (an alarm's reasons, from an earlier hour): the same groups, no SOFA beside
    assert transforms.reasons_by_system(why)[0] == "- **Cardiovascular**"


def test_not_measured_for_long_in_words_and_after_the_values_of_its_system():
    """A gap of more than 24 h is a reason of its own: said as what a normal value now would do,
    listed under its system after that system's values, and it never ranks a system above real
    abnormal values (here a 4-point gap in lactate stays below a 1-point heart rate)."""
    from dashboard.client import Contribution, _contributions

    lactate = Contribution("Lactate", 2.1, 0.012, reference=1.0, hours_since=31.0, system="metabolic/perfusion",
                           basis="not measured")
    assert transforms.contribution_text(lactate) == \
        "Lactate not measured for 31.0 h (last 2.1; normal 1): a normal value now would lower the risk by 1.2 points"
    never = Contribution("Lactate", None, 0.0004, reference=1.0, hours_since=None, system="metabolic/perfusion",
                         basis="not measured")
    assert transforms.contribution_text(never) == \
        "Lactate never measured (normal 1): a normal value now would lower the risk by 0.04 points"
    # the service's items: basis kept, and a stored item from before it existed is a value
    parsed = _contributions([{"feature": "Lactate", "value": None, "delta": 0.04, "system": "metabolic/perfusion",
                              "reference": 1.0, "unit": "mmol/L", "hours_since": None, "basis": "not measured"},
                             {"feature": "HR", "value": 120.0, "delta": 0.01}])
    assert [c.basis for c in parsed] == ["not measured", "value"]
    assert [c.unit for c in parsed] == ["mmol/L", None]  # the unit kept; none stored before units

    why = [Contribution("HR", 126.0, 0.01, reference=80.0, hours_since=0.0, system="cardiovascular"),
           Contribution("pH", 7.3, 0.004, reference=7.4, hours_since=1.0, system="metabolic/perfusion"),
           Contribution("Platelets", 60.0, 0.002, reference=250.0, hours_since=2.0, system="coagulation"),
           Contribution("Lactate", None, 0.04, reference=1.0, hours_since=None, system="metabolic/perfusion",
                        basis="not measured"),
           Contribution("Bilirubin_total", 1.9, 0.03, reference=0.7, hours_since=40.0, system="hepatic",
                        basis="not measured")]
    assert transforms.reasons_by_system(why) == [
        "- **Cardiovascular**",
        "    - HR 126 (normal 80) raised the risk by 1.0 points",
        "- **Metabolic/perfusion**",
        "    - pH 7.3 (measured 1.0 h before; normal 7.4) raised the risk by 0.4 points",
        "    - Lactate never measured (normal 1): a normal value now would lower the risk by 4.0 points",
        "- **Coagulation**",
        "    - Platelets 60 (measured 2.0 h before; normal 250) raised the risk by 0.2 points",
        "- **Hepatic**",
        ("    - Bilirubin_total not measured for 40.0 h (last 1.9; normal 0.7): a normal value now would lower "
         "the risk by 3.0 points")]
    # only gaps listed (no value moved the risk): they rank their systems by size
    assert transforms.reasons_by_system(why[3:])[0] == "- **Metabolic/perfusion**"
    # a gap listed before a value of its system still comes after it
    lines = transforms.reasons_by_system(why[:0:-1])
    assert lines[:3] == ["- **Metabolic/perfusion**", "    - " + transforms.contribution_text(why[1]),
                         "    - " + transforms.contribution_text(why[3])]
