"""The stored rows the FHIR reads render (read-only queries)."""
from __future__ import annotations

from sqlalchemy import select

from service.fhir import resources
from service.storage.tables import Observation


def risk_assessments(factory, patient_id: str) -> list[dict]:
    """Every scored observation of the patient, in time order, as a RiskAssessment."""
    with factory.begin() as s:
        rows = s.execute(select(Observation.ts, Observation.risk, Observation.threshold, Observation.model_name,
                                Observation.model_version, Observation.alarm_id)
                         .where(Observation.patient_id == patient_id).order_by(Observation.ts)).all()
    return [resources.risk_assessment(patient_id, r.ts, r.risk, r.threshold, r.model_name, r.model_version, r.alarm_id)
            for r in rows]
