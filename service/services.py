"""The services container: everything a request needs, built once at start-up and closed at shutdown."""
from __future__ import annotations

import datetime as dt
import logging

from service.lifecycle import active as active_model
from service.auth import KeyVerifier, seed_keys
from service.clock import ServiceClock
from service.config import Settings
from service.patients.corrections import Corrections
from service.scoring.inference import Model
from service.scoring.ingest import Ingestor
from service.metrics import Metrics
from service.ward.queue import AlarmQueue
from service.ward.records import Records
from service.alarms.actions import Alarms
from service.patients.admission import Admissions
from service.patients.outcome import Outcomes
from service.lifecycle.shadows import Shadows, parse_shadow_models
from service.lifecycle.upgrades import Upgrades
from service.storage.db import make_engine, migrate, read_only, sessions

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
        self.model = self._recorded_model(settings) or Model.load(settings, self.metrics)
        margin = dt.timedelta(hours=settings.future_margin_hours)
        self.clock = ServiceClock(settings.clock)  # stamps every action (service/clock.py)
        self.ingestor = Ingestor(self.engine, self.model, self.metrics, margin, clock=self.clock,
                                 explain=settings.explain)
        # Each unit's operating point, of the model in force (service/alarms/thresholds.py), and the queue.
        self.units = self.ingestor.units
        self.records = Records(self.engine, self.units, self.clock)
        self.alarms = Alarms(self.engine, self.clock)
        self.admissions = Admissions(self.engine, self.ingestor.locks, margin)
        self.outcomes = Outcomes(self.engine, self.clock, margin)
        self.queue = AlarmQueue(self.engine, self.units, self.clock)
        self.corrections = Corrections(self.engine, self.model, self.ingestor.locks)
        self.corrections.clock = self.clock
        self.shadows = Shadows([Model.load(settings, self.metrics, name, version, active=False, shadow=True)
                                for name, version in parse_shadow_models(settings.shadow_models)], self.metrics)
        self.ingestor.shadows = self.shadows if self.shadows.models else None
        self.upgrades = Upgrades(self.engine, self.ingestor.locks, lambda: self.model, self.activate)
        self.follower = (active_model.Follower(self.engine, settings.model_follow_s,
                                               lambda: (self.model.name, self.model.version), self.adopt)
                         if settings.model_follow_s > 0 else None)

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
        model = Model.load(self.settings, self.metrics, name, version, active=False)
        with self.ingestor.locks.hold_all():
            if (self.model.name, self.model.version) == (name, version):
                model.close()
                return
            self.activate(model)
        log.info("following the recorded model switch: now serving %s:%s", name, version)

    def activate(self, model: Model) -> None:
        """Make `model` the one every request uses (service/lifecycle/upgrades.py calls it holding every patient
        lock, with every monitored patient's state already rebuilt on it)."""
        old = self.model
        self.model = self.ingestor.model = self.corrections.model = model
        old.set_active(False)
        model.set_active(True)
        old.close()

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()
        self.model.close()
        self.engine.dispose()
