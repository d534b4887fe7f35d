"""The services container: everything a request needs, built once at start-up (each part given
what it uses when it is made) and closed at shutdown."""
from __future__ import annotations

import datetime as dt
import logging

from service.alarms.actions import Alarms
from service.alarms.thresholds import UnitPoints
from service.auth import KeyVerifier, seed_keys
from service.clock import ServiceClock
from service.config import Settings
from service.lifecycle import active as active_model
from service.lifecycle.active import ActiveModel
from service.lifecycle.shadows import Shadows, parse_shadow_models
from service.lifecycle.upgrades import Upgrades
from service.metrics import Metrics
from service.patients.admission import Admissions
from service.patients.corrections import Corrections
from service.patients.outcome import Outcomes
from service.scoring.inference import Model
from service.scoring.ingest import Ingestor
from service.scoring.locks import StripedLocks
from service.storage.db import make_engine, migrate, read_only, sessions
from service.ward.queue import AlarmQueue
from service.ward.records import Records

log = logging.getLogger("service")


class Services:
    """Everything a request needs, built once at start-up."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.engine = make_engine(settings.db_url, settings.sqlite_synchronous, settings.db_pool_size,
                                  settings.db_max_overflow, settings.db_pool_timeout_s)
        if settings.migrate:
            migrate(self.engine)
        self.factory = sessions(self.engine)
        if settings.bootstrap_keys:
            seed_keys(self.factory, settings.bootstrap_keys)
        self.keys = KeyVerifier(self.factory, settings.key_cache_seconds)
        margin = dt.timedelta(hours=settings.future_margin_hours)
        self.clock = ServiceClock(settings.clock)  # stamps every action (service/clock.py)
        # The one holder of the active model, and the patients' locks every writer of this process takes.
        self.active = ActiveModel(self._recorded_model(settings) or Model.load(settings, self.metrics), StripedLocks())
        # Each unit's operating point, of the model in force (service/alarms/thresholds.py).
        self.units = UnitPoints(lambda: self.active.current, self.engine, self.clock)
        self.shadows = Shadows([Model.load(settings, self.metrics, name, version, active=False, shadow=True)
                                for name, version in parse_shadow_models(settings.shadow_models)], self.metrics,
                               self.engine)
        self.ingestor = Ingestor(self.engine, self.active, self.units, self.metrics, self.clock, margin,
                                 explain=settings.explain, shadows=self.shadows if self.shadows.models else None,
                                 revision_window=settings.revision_window_hours, max_gap=settings.max_gap_hours)
        self.admissions = Admissions(self.engine, self.active.locks, margin)
        self.outcomes = Outcomes(self.engine, self.clock, margin)
        self.corrections = Corrections(self.engine, self.active, self.clock)
        self.alarms = Alarms(self.engine, self.clock)
        self.records = Records(self.engine, self.units, self.clock)
        self.queue = AlarmQueue(self.engine, self.units, self.clock)
        self.upgrades = Upgrades(self.engine, self.active)
        self.follower = (active_model.Follower(self.engine, settings.model_follow_s, self._serving, self.adopt)
                         if settings.model_follow_s > 0 else None)

    @property
    def model(self) -> Model:
        """The active model (this request's, once it pinned one)."""
        return self.active.current

    def _serving(self) -> tuple[str, str]:
        return self.active.current.name, self.active.current.version

    def _recorded_model(self, settings: Settings) -> Model | None:
        """The model the last switch recorded, when there was one (it outranks SEPSIS_MODEL)."""
        with read_only(self.engine).connect() as conn:
            target = active_model.recorded(conn)
        if target is None:
            return None
        try:
            model = Model.load(settings, self.metrics, *target)
        except (LookupError, ValueError) as err:
            log.error("the last model switch recorded %s:%s, which cannot be loaded here (%s); serving the "
                      "configured model instead", *target, err)
            return None
        if (settings.model, settings.model_version) != target:
            log.warning("serving %s:%s, the model the last switch recorded (the configuration names %s:%s)",
                        *target, settings.model, settings.model_version)
        return model

    def adopt(self, name: str, version: str) -> None:
        """Follow a switch another process made: its states are rebuilt already, so swap only."""
        self.active.adopt(name, version,
                          lambda n, v: Model.load(self.settings, self.metrics, n, v, active=False))

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()
        self.active.close()
        self.engine.dispose()
