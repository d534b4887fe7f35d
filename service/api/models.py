"""The models the service runs: the active one and its shadows, a switch of the active model
(admin, audited) with its progress, and their comparison on recorded outcomes."""
from __future__ import annotations

import logging

from fastapi import APIRouter, Depends

from service import audit, schemas
from service.api.deps import ERRORS, Caller, ServicesDep, SinceQuery, Viewer, errors, require
from service.errors import Invalid
from service.scoring.inference import Model

router = APIRouter(tags=["models"])
log = logging.getLogger("service")


def _out(m: Model) -> schemas.ModelOut:
    return schemas.ModelOut(model=m.name, version=m.version, threshold=m.threshold, state_size=m.state_size,
                            provider=m.provider)


@router.get("/models", response_model=schemas.ModelsOut, responses=ERRORS, dependencies=[Viewer])
def models(services: ServicesDep):
    """The active model and the shadow models scored beside it."""
    return schemas.ModelsOut(active=_out(services.model), shadows=[_out(m) for m in services.shadows.models])


@router.post("/models/active", response_model=schemas.UpgradeProgress,
             responses=errors(400, 401, 403, 409, 413, 422), dependencies=[Depends(require("admin"))])
def switch_model(body: schemas.ModelSwitchIn, services: ServicesDep, caller: Caller):
    """Admin only, audited (action model_switch, and threshold_change for each unit whose threshold
    in force the new model changes: a new operating-point period): make another registry model the active one. Every
    monitored patient's state is first rebuilt on it from their stored observations (the whole ward
    stepped together), observations arriving meanwhile included; then the switch is atomic: each
    request is scored wholly by the old model or wholly by the new. Nothing stored is changed but the
    patients' states. Answers when done, with the counts; GET /models/upgrade shows the progress
    meanwhile. 409 when this model is already active or another switch is running; 422 when the
    registry has no such model."""
    try:
        target = Model.load(services.settings, services.metrics, body.name, body.version, active=False)
    except (LookupError, ValueError) as err:  # not in the registry, or a broken card / graph
        log.warning("cannot load model %s:%s: %s", body.name, body.version, err)  # with its paths
        why = getattr(err, "public", None) or f"its files are broken ({type(err).__name__}; the service log says where)"
        raise Invalid(f"cannot load model {body.name}:{body.version}: {why}",
                      errors=[{"field": "version", "reason": f"no loadable model {body.name}:{body.version} in "
                                                             "the registry"}]) from None
    actor = audit.actor(caller, body.by)

    def record(conn, p) -> None:
        at = services.clock.now(conn)
        audit.record(conn, action="model_switch", actor=actor, at=at, note=body.note,
                     details={"from": p.from_model, "to": p.to_model, "patients": p.patients_rebuilt,
                              "hours": p.hours_rebuilt, "caught_up": p.caught_up, "seconds": p.seconds})
        # called before the swap: services.model is still the old model. A unit whose threshold
        # the switch changes gets its own audited change, the start of an operating-point period.
        services.units.record_switch(conn, services.model, target, actor, at, body.note)

    try:
        progress = services.upgrades.switch(target, by=body.by, note=body.note, audit=record)
    except BaseException:
        target.close()
        raise
    return schemas.UpgradeProgress(**progress.as_dict())


@router.get("/models/upgrade", response_model=schemas.UpgradeProgress, responses=ERRORS, dependencies=[Viewer])
def upgrade_progress(services: ServicesDep):
    """The running model switch's progress, or the last one's result (state idle when none ran)."""
    return schemas.UpgradeProgress(**services.upgrades.progress.as_dict())


@router.get("/stats/models", response_model=schemas.ModelComparison, responses=ERRORS, dependencies=[Viewer])
def compare_models(services: ServicesDep, since: SinceQuery = None):
    """The active model and every shadow on the observations all of them scored: patient-hour AUROC
    against the recorded outcomes, and the alarm figures of GET /stats (a shadow's would-be alarms)."""
    return services.shadows.comparison(services.model, since)
