"""Operating points: the model's measured thresholds and each unit's choice (admin)."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path

from service import audit, schemas
from service.api.deps import ERRORS, Caller, ServicesDep, Viewer, errors, require
from service.alarms.thresholds import UNITS, UnitThreshold

router = APIRouter(tags=["operating points"])

UnitPath = Annotated[Literal["MICU", "SICU", "other"], Path(description="the unit: " + ", ".join(UNITS))]


def _choice(t: UnitThreshold) -> schemas.UnitChoice:
    p = t.policy
    return schemas.UnitChoice(unit=t.unit, point_id=t.point_id, threshold=t.threshold, label=t.label,
                              chosen_by=t.chosen_by, chosen_at=t.chosen_at, note=t.note, chosen_on=t.chosen_on,
                              alarm_policy=None if p is None else schemas.AlarmPolicyOut(
                                  threshold=p.threshold, lockout_hours=p.lockout_hours, rise_factor=p.rise_factor,
                                  tiers=list(p.tiers), description=p.describe()))


def _out(services, thresholds: dict[str, UnitThreshold]) -> schemas.OperatingPointsOut:
    model = services.units.model_of()
    table = services.units.table(model)
    return schemas.OperatingPointsOut(
        model=model.name, model_version=model.version, card_threshold=model.threshold,
        default_point=table.default_point if table is not None else None,
        table=table.model_dump(mode="json") if table is not None else None,
        units=[_choice(thresholds[u]) for u in UNITS])


@router.get("/operating-points", response_model=schemas.OperatingPointsOut, responses=ERRORS, dependencies=[Viewer])
def operating_points(services: ServicesDep):
    """The loaded model's operating points (thresholds measured on validation, with their test
    figures, and the risk bands) and the threshold each unit alarms at now."""
    return _out(services, services.units.in_force())


@router.put("/units/{unit}/operating-point", response_model=schemas.OperatingPointsOut,
            # 404 is listed because every route with a path parameter lists it (tests/service/test_fuzz.py);
            # an unknown unit is answered 422 naming `unit`, as the path parameter's enum says.
            responses=errors(400, 401, 403, 404, 409, 413, 422), dependencies=[Depends(require("admin"))])
def choose_operating_point(unit: UnitPath, body: schemas.OperatingPointIn, services: ServicesDep, caller: Caller):
    """Admin only, audited (action threshold_change): the unit's alarms are raised at the chosen
    point's threshold from the next observation on; stored risks and alarms are not changed. An
    unknown unit or point id is a 422 naming the field."""
    return _out(services, services.units.choose_now(unit, body.point_id, body.by, body.note,
                                                    audit.actor(caller, body.by)))
