"""The tables. Times are stored as UTC; the model state is the runtime's float32 vector as bytes."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (JSON, false, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String,
                        TypeDecorator, UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    admitted_by: Mapped[str] = mapped_column(String(24))  # "admission" or "first_observation"
    age: Mapped[float | None] = mapped_column(Float)
    gender: Mapped[float | None] = mapped_column(Float)
    unit1: Mapped[float | None] = mapped_column(Float)
    unit2: Mapped[float | None] = mapped_column(Float)
    hosp_adm_time: Mapped[float | None] = mapped_column(Float)
    icu_admit_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Streaming state, advanced by each observation. `version` guards it against lost updates
    # from another process: every write is UPDATE ... WHERE version = <version read>.
    state: Mapped[bytes | None] = mapped_column(LargeBinary)
    model_name: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(32))
    last_ts: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    first_ts: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    n_observations: Mapped[int] = mapped_column(Integer, default=0)
    last_risk: Mapped[float | None] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer, default=0)
    # Outcome, once known: "sepsis" (with onset_time) or "no_sepsis" (discharged without sepsis).
    outcome: Mapped[str | None] = mapped_column(String(16))
    onset_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    discharged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    outcome_recorded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    outcome_recorded_by: Mapped[str | None] = mapped_column(String(128))
    # The latest observation that carried a vital or lab value (not only demographics, not empty).
    last_measured: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The start of the first hour with a vital sign or lab (models.alarm_figures.measured): the
    # patient is monitored from it (no alarm before it; /stats counts hours from it). None: none yet.
    first_measured: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    bed: Mapped[str | None] = mapped_column(String(32))  # from the admission, as the ward names it
    # After a transfer (a FHIR Encounter's later location): where the ward sees the patient, and
    # since when. unit1/unit2 stay the admission's (the model's demographics are fixed per stay).
    ward_unit: Mapped[str | None] = mapped_column(String(16))
    ward_bed: Mapped[str | None] = mapped_column(String(32))
    transferred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The sender's Encounter of the stay (a FHIR bundle's ICU Encounter), as sent, for the
    # RiskAssessments and Flags to name: its logical id (a FHIR id: at most 64 characters) and/or
    # its first business identifier. service/patients/encounter.py.
    encounter_id: Mapped[str | None] = mapped_column(String(64))
    encounter_system: Mapped[str | None] = mapped_column(String(255))
    encounter_value: Mapped[str | None] = mapped_column(String(128))

    # An Encounter is one stay of one patient (migration 0013). NULLs are distinct in a unique
    # index on SQLite and PostgreSQL alike, so a composite (system, value) index would let a
    # system-less identifier repeat: the identifier is unique by (system, value) among those with
    # a system and by value among those without, two partial indexes.
    __table_args__ = (
        Index("ux_patients_encounter_id", "encounter_id", unique=True),
        Index("ux_patients_encounter_identifier", "encounter_system", "encounter_value", unique=True,
              sqlite_where=text("encounter_system IS NOT NULL"), postgresql_where=text("encounter_system IS NOT NULL")),
        Index("ux_patients_encounter_value_no_system", "encounter_value", unique=True,
              sqlite_where=text("encounter_system IS NULL"), postgresql_where=text("encounter_system IS NULL")),
    )


class Message(Base):
    """Every value as received (service/scoring/filing.py): the patient's hourly rows (`observations`)
    are derived from these, so a late or amended value re-files its hour. `value` is in the model's
    unit (`unit`); `hour` is the ICULOS its effective time falls in (models/grid.py). A message
    with no variable only marks its hour as part of the stay (an observation posted empty)."""
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_patient_hour", "patient_id", "hour"),
                      Index("ix_messages_patient_key", "patient_id", "key"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(300))        # the value's identity: source id or timestamp, and variable
    variable: Mapped[str | None] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(64))
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # effective: measured, or a specimen drawn
    hour: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(8))       # "json" or "fhir"
    source_id: Mapped[str | None] = mapped_column(String(200))  # the sender's id (a FHIR Observation id)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Observation(Base):
    """One hour of a patient's stay as the model stepped it (ts = the hour's start): the hour's
    values from `messages`, the risk (as first shown, and as last revised, by which message), the
    state after the step (where a late value rewinds to)."""
    __tablename__ = "observations"
    __table_args__ = (UniqueConstraint("patient_id", "ts", name="uq_observation_patient_ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    vitals: Mapped[dict] = mapped_column(JSON)
    elapsed_hours: Mapped[float] = mapped_column(Float)
    iculos: Mapped[float] = mapped_column(Float)
    risk: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    alarm_id: Mapped[int | None] = mapped_column(Integer)  # the alarm this observation raised
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # [{"feature", "value", "delta", ..., "basis"}] (models/explain.py, schemas.Contribution; rows from before
    # "basis" have none and read as "value"); null when explanations were off
    contributions: Mapped[list | None] = mapped_column(JSON)
    state: Mapped[bytes | None] = mapped_column(LargeBinary)    # after this hour's step, of model_name:model_version
    first_risk: Mapped[float | None] = mapped_column(Float)     # the risk as first shown
    revised_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revised_by: Mapped[int | None] = mapped_column(Integer)     # the message whose filing last changed the risk
    revisions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Alarm(Base):
    __tablename__ = "alarms"
    __table_args__ = (Index("ix_alarms_patient_state", "patient_id", "state"),
                      Index("ix_alarms_raised_at", "raised_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    raised_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # the observation's timestamp
    risk: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # open / acknowledged / snoozed / resolved
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ack_reason: Mapped[str | None] = mapped_column(String(32))
    ack_note: Mapped[str | None] = mapped_column(String(1000))
    snoozed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    snoozed_by: Mapped[str | None] = mapped_column(String(128))
    snoozed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    resolve_note: Mapped[str | None] = mapped_column(String(1000))
    contributions: Mapped[list | None] = mapped_column(JSON)  # the raising observation's
    # The policy's event kind (models.alarm_policy.KINDS): "raised", or a re-alert / escalation
    # that replaced `previous_alarm_id` (resolved as superseded by this one).
    kind: Mapped[str] = mapped_column(String(40), default="raised", server_default="raised")
    previous_alarm_id: Mapped[int | None] = mapped_column(Integer)
    # Raised when a late or amended value revised an earlier hour (not by the current hour's own data).
    late_result: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell keys apart in listings
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Correction(Base):
    """The audit of an admin's removal of a patient's observations after a time: who, when, why,
    and every removed row as it was stored (so nothing is lost, only moved here)."""
    __tablename__ = "corrections"
    __table_args__ = (Index("ix_corrections_patient", "patient_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(String(64))  # no foreign key: the audit outlives any row
    after: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    corrected_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    corrected_by: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[int | None] = mapped_column(Integer)  # the admin key the request carried
    key_name: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(1000))
    removed_observations: Mapped[int] = mapped_column(Integer)
    removed_alarms: Mapped[int] = mapped_column(Integer)
    removed: Mapped[dict] = mapped_column(JSON)  # {"observations": [...], "alarms": [...]}


class AuditEvent(Base):
    """One row per action on a patient or alarm (service/audit.py): who (the API key's identity and
    the person's name), when on the service clock, what, the note and the action's details."""
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_patient", "patient_id"), Index("ix_audit_alarm", "alarm_id"),
                      Index("ix_audit_at", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)           # the service clock's time of the action
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # the wall clock's, when the row was written
    action: Mapped[str] = mapped_column(String(32))
    patient_id: Mapped[str | None] = mapped_column(String(64))     # no foreign keys: the audit outlives any row
    alarm_id: Mapped[int | None] = mapped_column(Integer)
    unit: Mapped[str | None] = mapped_column(String(16))
    key_id: Mapped[int | None] = mapped_column(Integer)
    key_name: Mapped[str | None] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))                  # the key's role, or "system"
    person: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(String(1000))
    details: Mapped[dict | None] = mapped_column(JSON)


class UnitOperatingPoint(Base):
    """The operating point an admin chose for a unit (MICU, SICU, other): ingest raises that unit's
    alarms at its threshold. A unit without a row alarms at the model card's threshold."""
    __tablename__ = "unit_operating_points"

    unit: Mapped[str] = mapped_column(String(16), primary_key=True)
    point_id: Mapped[str] = mapped_column(String(64))
    threshold: Mapped[float] = mapped_column(Float)       # the point's threshold when it was chosen
    model_name: Mapped[str] = mapped_column(String(64))   # the model whose table it was chosen from
    model_version: Mapped[str] = mapped_column(String(32))
    chosen_by: Mapped[str] = mapped_column(String(128))
    chosen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(String(1000))


class ShadowState(Base):
    """A shadow model's state per patient (service/lifecycle/shadows.py): advanced by every observation the
    live model scores, rebuilt from the stored observations when it does not cover exactly the
    patient's stored history (`n_observations`, `last_ts`)."""
    __tablename__ = "shadow_states"

    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    n_observations: Mapped[int] = mapped_column(Integer)  # how many of the patient's observations it covers
    last_ts: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_risk: Mapped[float | None] = mapped_column(Float)
    alarm_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # the shadow's current would-be alarm


class ShadowScore(Base):
    """A shadow model's risk for one stored observation, whether it would have raised an alarm
    there, and its state after that hour's step. Nobody is notified of these."""
    __tablename__ = "shadow_scores"
    __table_args__ = (UniqueConstraint("patient_id", "model_name", "model_version", "ts", name="uq_shadow_score"),
                      Index("ix_shadow_scores_model", "model_name", "model_version"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # the observation's timestamp
    risk: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    alarm: Mapped[bool] = mapped_column(Boolean)  # a would-be alarm raised at this observation
    # after this hour's step: a rewind resumes here (None for scores stored before 0014: replayed then)
    state: Mapped[bytes | None] = mapped_column(LargeBinary)


class ActiveModel(Base):
    """One row (id 1) once a model switch has run: the model every process serves (service/lifecycle/active.py)."""
    __tablename__ = "active_model"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    switched_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    switched_by: Mapped[str | None] = mapped_column(String(128))


class ModelSwitchClaim(Base):
    """One row (id 1): the model switch running on this database, if any (service/lifecycle/active.py).
    A switch claims it with a conditional UPDATE (token NULL, or a heartbeat gone stale) and frees
    it in the transaction that records the switch."""
    __tablename__ = "model_switch_claim"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str | None] = mapped_column(String(36))     # the claiming switch's; NULL when none runs
    target: Mapped[str | None] = mapped_column(String(100))   # "name:version" it switches to
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # renewed after each rebuilt chunk
