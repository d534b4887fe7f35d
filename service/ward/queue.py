"""The alarm queue a nurse works from: one card per active alarm of a patient still on the ward.

Order: open before acknowledged before snoozed; within a state, the higher current risk first,
then the alarm open longest. Each card carries what a nurse needs to act without opening the
patient: unit and bed, risk at raise and now with its last risks, time open on the service clock,
latest values with their age, the contributions behind the alarm and behind the latest risk, the
bedside scores (`service/patients/bedside.py`) and the risk in words at the unit's threshold.

Reads are a fixed number of queries whatever the queue's length: the alarms with their patients,
the patients' observations (time, values, risk), the latest observations' contributions, and the
units' thresholds.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, select
from sqlalchemy.engine import Engine

from service import schemas
from service.alarms.rules import ACTIVE_STATES
from service.alarms.thresholds import UnitPoints, unit_of
from service.patients.status import patient_status, placed
from service.storage.tables import Alarm, Observation, Patient
from service.ward.context import bedside, charted

TREND_POINTS = 12
STATE_ORDER = {state: i for i, state in enumerate(ACTIVE_STATES)}  # open, acknowledged, snoozed
A, P, O = Alarm.__table__, Patient.__table__, Observation.__table__

_ALARMS = (select(A, P.c.unit1, P.c.unit2, P.c.bed, P.c.ward_unit, P.c.ward_bed, P.c.transferred_at, P.c.last_risk, P.c.last_ts, P.c.outcome, P.c.discharged_at)
           .join(P, P.c.id == A.c.patient_id).where(A.c.state.in_(ACTIVE_STATES)))


def order_key(card: schemas.QueueCard) -> tuple:
    """open < acknowledged < snoozed; then current risk, highest first; then the longest open."""
    risk = card.risk if card.risk is not None else -1.0
    return (STATE_ORDER[card.state], -risk, card.raised_at, card.alarm_id)


def minutes_between(later: dt.datetime, earlier: dt.datetime) -> float:
    return max(0.0, (later - earlier).total_seconds() / 60.0)


class AlarmQueue:
    def __init__(self, engine: Engine, units: UnitPoints, clock):
        self.engine = engine
        self.units = units
        self.clock = clock

    def cards(self) -> schemas.AlarmQueueOut:
        model = self.units.model_of()
        with self.engine.begin() as conn:
            now = self.clock.now(conn)
            alarms = [a for a in conn.execute(_ALARMS)
                      if patient_status(a.outcome, a.discharged_at) != "discharged"]
            ids = sorted({a.patient_id for a in alarms})
            history: dict[str, list] = {pid: [] for pid in ids}
            latest_contrib: dict[str, list | None] = {}
            if ids:
                for o in conn.execute(select(O.c.patient_id, O.c.ts, O.c.vitals, O.c.risk)
                                      .where(O.c.patient_id.in_(ids)).order_by(O.c.patient_id, O.c.ts)):
                    history[o.patient_id].append(o)
                latest_contrib = dict(conn.execute(
                    select(O.c.patient_id, O.c.contributions)
                    .join(P, and_(P.c.id == O.c.patient_id, P.c.last_ts == O.c.ts)).where(P.c.id.in_(ids))).all())
            thresholds = self.units.thresholds(conn, model)
            values = charted(conn, ids, history)
        cards = []
        for a in alarms:
            rows = history[a.patient_id]
            unit = unit_of(a.unit1, a.unit2)
            threshold = thresholds[unit].threshold
            context = bedside(values[a.patient_id], now)
            risk = a.last_risk
            cards.append(schemas.QueueCard(
                alarm_id=a.id, state=a.state, kind=a.kind, previous_alarm_id=a.previous_alarm_id, late_result=a.late_result, raised_at=a.raised_at,
                open_minutes=minutes_between(now, a.raised_at),
                acknowledged_by=a.acknowledged_by, acknowledged_at=a.acknowledged_at, ack_reason=a.ack_reason,
                snoozed_until=a.snoozed_until, patient_id=a.patient_id, unit=placed(a)[0], bed=placed(a)[1],
                status=patient_status(a.outcome, a.discharged_at),
                threshold=threshold, operating_point=thresholds[unit].point_id,
                risk_at_raise=a.risk, risk=risk, risk_at=a.last_ts,
                trend=[schemas.RiskPoint(timestamp=o.ts, risk=o.risk) for o in rows[-TREND_POINTS:]],
                risk_in_words=self.units.words(risk, threshold, model),
                contributions=a.contributions, latest_contributions=latest_contrib.get(a.patient_id),
                latest=context["latest"], bedside=context))
        cards.sort(key=order_key)
        return schemas.AlarmQueueOut(now=now, clock=getattr(self.clock, "mode", "wall"), count=len(cards), cards=cards)
