"""What a risk means for one patient: the bedside context of its stored observations and the
risk in words at its unit's threshold. Shared by the patient page's body and the alarm queue."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from models.grid import Standing
from service.alarms.thresholds import UnitPoints, UnitThreshold, unit_of
from service.patients.bedside import bedside_context
from service.storage.tables import Message

M = Message.__table__


def charted(conn, patient_ids: list[str], hourly: dict[str, list] | None = None) -> dict[str, list[tuple[dt.datetime, dict]]]:
    """Each patient's standing values as (time measured, {variable: value}) in time order, from the
    messages (models.grid's statuses applied): a value's age is from when it was measured, not
    from the start of the hour it was filed in. A patient without messages (stored before they
    were kept) gets its `hourly` rows' (ts, vitals)."""
    out: dict[str, list] = {pid: [] for pid in patient_ids}
    if not patient_ids:
        return out
    standing: dict[str, Standing] = {pid: Standing() for pid in patient_ids}
    q = (select(M.c.patient_id, M.c.key, M.c.variable, M.c.value, M.c.ts, M.c.status)
         .where(M.c.patient_id.in_(patient_ids), M.c.variable.is_not(None)).order_by(M.c.id))
    for m in conn.execute(q):
        standing[m.patient_id].apply(m)
    for pid, st in standing.items():
        if st.values or st.removed:
            out[pid] = sorted(((m.ts, {m.variable: m.value}) for m in st.values.values()), key=lambda x: x[0])
        elif hourly is not None:
            out[pid] = [(o.ts, o.vitals) for o in hourly.get(pid, [])]
    return out


def bedside(timeline: list[tuple[dt.datetime, dict]], now: dt.datetime) -> dict:
    """service/patients/bedside.py's context of (time, values) in time order, at the service clock's `now`."""
    return bedside_context(timeline, now)


def unit_threshold(thresholds: dict[str, UnitThreshold], unit1: float | None, unit2: float | None) -> UnitThreshold:
    return thresholds[unit_of(unit1, unit2)]


def patient_context(units: UnitPoints | None, thresholds: dict[str, UnitThreshold] | None, row,
                    timeline: list[tuple[dt.datetime, dict]], now: dt.datetime) -> dict:
    """PatientDetail's bedside, threshold, operating_point and risk_in_words for a patients row."""
    out = {"bedside": bedside(timeline, now)}
    if units is not None and thresholds is not None:
        chosen = unit_threshold(thresholds, row.unit1, row.unit2)
        out.update(threshold=chosen.threshold, operating_point=chosen.point_id,
                   risk_in_words=units.words(row.last_risk, chosen.threshold))
    return out
