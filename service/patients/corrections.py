"""An admin's correction of a patient's record: remove its observations after a time (a clock set
years ahead, a feed replayed into the wrong patient), and the alarms they raised, then rebuild the
patient's model state from the observations that remain, so monitoring resumes where they end.

Everything at or before the time is left as stored. The removed rows are not destroyed: the audit
row (table `corrections`) holds them as they were, with who asked, with which key, when and why.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from service import audit
from service.alarms import store as alarm_store
from service.auth import KeyIdentity
from service.clock import ServiceClock
from service.errors import Conflict, NotFound
from models.alarm_figures import measured
from service.inputs import last_measured, state_to_bytes
from service.scoring.inference import Model
from service.scoring.rebuild import demographics_of, replay, stay
from service.storage.tables import Correction, Message, Observation, Patient

UTC = dt.timezone.utc
P, O, C, M = Patient.__table__, Observation.__table__, Correction.__table__, Message.__table__


@dataclass(frozen=True)
class Corrected:
    correction_id: int
    patient_id: str
    after: dt.datetime
    removed_observations: int
    removed_alarms: int
    remaining_observations: int
    last_observation: dt.datetime | None
    corrected_at: dt.datetime
    corrected_by: str


def _as_json(row) -> dict:
    """A removed row as the audit keeps it (a model state is rebuilt from the values, not kept)."""
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row._mapping.items()
            if not isinstance(v, bytes)}


class Corrections:
    def __init__(self, engine: Engine, active, clock: ServiceClock):
        """`active`: the active model's holder (service/lifecycle/active.py), whose locks the
        ingestor takes too: no observation of this patient is scored meanwhile in this process."""
        self.engine = engine
        self.active = active
        self.locks = active.locks
        self.clock = clock  # stamps the correction

    def remove_after(self, pid: str, after: dt.datetime, by: str, reason: str, key: KeyIdentity | None) -> Corrected:
        after = after.astimezone(UTC)
        with self.locks.hold([pid]), self.active.pin() as model, self.engine.begin() as s:
            now = self.clock.now(s)
            # FOR UPDATE holds other processes' writers of this patient until we commit (SQLite's
            # BEGIN IMMEDIATE already does); their version check then sends them to re-read.
            row = s.execute(select(P).where(P.c.id == pid).with_for_update()).first()
            if row is None:
                raise NotFound(f"no patient {pid!r}")
            removed = s.execute(select(O).where(O.c.patient_id == pid, O.c.ts > after).order_by(O.c.ts)).all()
            if not removed:
                raise Conflict(f"patient {pid} has no observation after {after.isoformat()}; nothing was changed")
            kept = s.execute(select(O).where(O.c.patient_id == pid, O.c.ts <= after).order_by(O.c.ts)).all()
            values = self._patient_after(row, kept, model)
            # the messages filed in the removed hours go with them (an hour kept keeps all of its own)
            gone = [o.iculos for o in removed]
            messages = s.execute(select(M).where(M.c.patient_id == pid, M.c.hour >= min(gone)).order_by(M.c.id)).all()
            s.execute(delete(M).where(M.c.patient_id == pid, M.c.hour >= min(gone)))
            s.execute(delete(O).where(O.c.patient_id == pid, O.c.ts > after))
            alarms = alarm_store.remove_raised_after(s, pid, after)
            done = s.execute(update(P).where(P.c.id == pid, P.c.version == row.version)
                             .values(version=row.version + 1, **values))
            if done.rowcount != 1:  # cannot happen under the row lock; refuse rather than guess
                raise Conflict(f"patient {pid} changed during the correction; nothing was changed, retry")
            cid = s.execute(insert(C).values(
                patient_id=pid, after=after, corrected_at=now, corrected_by=by, reason=reason,
                key_id=key.id if key else None, key_name=key.name if key else None,
                removed_observations=len(removed), removed_alarms=len(alarms),
                removed={"observations": [_as_json(o) for o in removed], "alarms": [_as_json(a) for a in alarms],
                         "messages": [_as_json(m) for m in messages]},
            )).inserted_primary_key[0]
            audit.record(s, action="correction", actor=audit.actor(key, by), at=now, patient_id=pid, note=reason,
                         details={"correction_id": cid, "after": after, "removed_observations": len(removed),
                                  "removed_alarm_ids": [a.id for a in alarms]})
        return Corrected(cid, pid, after, len(removed), len(alarms), len(kept),
                         kept[-1].ts if kept else None, now, by)

    def _patient_after(self, row, kept, model: Model) -> dict:
        """The patient's streaming columns as if only `kept` had ever been posted."""
        if not kept:
            values = dict(state=None, model_name=None, model_version=None, last_ts=None, first_ts=None,
                          n_observations=0, last_risk=None, last_measured=None, first_measured=None)
            if row.admitted_by == "first_observation":  # its ICU admission was the removed first observation
                values["icu_admit_time"] = None
            return values
        _, states = replay(model, [stay(row.id, kept, demographics_of(row))])
        return dict(state=state_to_bytes(states[0]), model_name=model.name, model_version=model.version,
                    last_ts=kept[-1].ts, first_ts=kept[0].ts, n_observations=len(kept), last_risk=kept[-1].risk,
                    last_measured=last_measured([(o.ts, o.vitals) for o in kept]),
                    # monitored from the first kept hour with a vital sign or lab (models.alarm_figures)
                    first_measured=next((o.ts for o in kept if measured(o.vitals or {})), None))
