"""The per-hour model states of ended stays, dropped once a late value is unlikely.

Every stored hour keeps the model's state after its step (`observations.state`, and each shadow's
`shadow_scores.state`), so that a late or amended value rewinds to the hour before it instead of
replaying the stay. With `sepsis-cfc/4` that state is 5.8 KB of the 8.3 KB stored per hour
(results/service_storage/README.md): most of the database, and of no use once no value can come.

`prune_states` sets those states to NULL for the stays that ended before a cut-off: discharged
(`discharged_at`), or recorded as discharged without sepsis (`no_sepsis`) with no discharge time.
Everything a user or an audit reads is kept: the messages, each hour's values, risks as first shown
and as revised, contributions, alarms, outcomes, and the patient's latest state. A late value dated
before the discharge still files afterwards, with the same risks: where the hour before it has no
state, the rewind replays the stored hours (service/scoring/ingest.py `_rewind`; shadows replay
the stay, service/lifecycle/shadows.py). It costs that one replay, bounded by the stay's length.

Run by operators (`python -m service prune-states --ended-days 7`, e.g. from cron), in
transactions of `PATIENTS_PER_TRANSACTION` stays, so it never holds a long lock beside live
traffic. On SQLite the file keeps its size and reuses the freed pages for new rows (`VACUUM`
returns them to the disk); PostgreSQL's autovacuum reuses them in place.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Engine

from service.storage.tables import Observation, Patient, ShadowScore

PATIENTS_PER_TRANSACTION = 200
O, SC = Observation.__table__, ShadowScore.__table__


@dataclass(frozen=True)
class Pruned:
    ended_before: dt.datetime
    stays: int           # ended stays that still held per-hour states
    hourly_states: int   # observations.state set to NULL
    shadow_states: int   # shadow_scores.state set to NULL

    def as_dict(self) -> dict:
        return {"ended_before": self.ended_before.isoformat(), "stays": self.stays,
                "hourly_states": self.hourly_states, "shadow_states": self.shadow_states}


def ended_before(cutoff: dt.datetime):
    """The SQL condition: the stay ended before `cutoff` (discharged, or no_sepsis recorded without a
    discharge time)."""
    return or_(Patient.discharged_at < cutoff,
               and_(Patient.discharged_at.is_(None), Patient.outcome == "no_sepsis",
                    Patient.outcome_recorded_at < cutoff))


def prune_states(engine: Engine, cutoff: dt.datetime) -> Pruned:
    """NULL the per-hour states (live and shadow) of every stay that ended before `cutoff` (aware
    datetime); the counts of what it changed."""
    if cutoff.tzinfo is None:
        raise ValueError("cutoff: must carry a time zone (the stored times are UTC)")
    holding = or_(select(O.c.id).where(O.c.patient_id == Patient.id, O.c.state.is_not(None)).exists(),
                  select(SC.c.id).where(SC.c.patient_id == Patient.id, SC.c.state.is_not(None)).exists())
    with engine.connect() as conn:
        stays = list(conn.execute(select(Patient.id).where(ended_before(cutoff), holding).order_by(Patient.id))
                     .scalars())
    hourly = shadow = 0
    for i in range(0, len(stays), PATIENTS_PER_TRANSACTION):
        ids = stays[i:i + PATIENTS_PER_TRANSACTION]
        with engine.begin() as conn:
            hourly += conn.execute(update(O).where(O.c.patient_id.in_(ids), O.c.state.is_not(None))
                                   .values(state=None)).rowcount
            shadow += conn.execute(update(SC).where(SC.c.patient_id.in_(ids), SC.c.state.is_not(None))
                                   .values(state=None)).rowcount
    return Pruned(cutoff, len(stays), hourly, shadow)


def stored_states(engine: Engine) -> dict[str, int]:
    """How many per-hour states are stored, and their bytes (live and shadow), for the CLI's report."""
    with engine.connect() as conn:
        live = conn.execute(select(func.count(O.c.state), func.coalesce(func.sum(func.length(O.c.state)), 0))).one()
        shadow = conn.execute(select(func.count(SC.c.state),
                                     func.coalesce(func.sum(func.length(SC.c.state)), 0))).one()
    return {"hourly_states": int(live[0]), "hourly_state_bytes": int(live[1]),
            "shadow_states": int(shadow[0]), "shadow_state_bytes": int(shadow[1])}
