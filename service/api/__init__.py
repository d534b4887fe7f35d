"""One router per resource; `service.app.create_app` includes them in this order."""
from service.api import alarms, fhir, models, operations, patients, scoring, units

ROUTERS = (scoring.router, patients.router, alarms.router, units.router, models.router, fhir.router, operations.router)
