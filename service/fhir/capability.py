"""The CapabilityStatement (`GET /fhir/metadata`): what this server really does, built from the
same search parameter table the searches parse (`service/fhir/search.py`), so the two cannot
disagree."""
from __future__ import annotations

import datetime as dt

from service.fhir.resources import instant
from service.fhir.search import FORMATS, PAGING, SEARCHES

_READ = {"code": "read"}
_SEARCH = {"code": "search-type"}
_CREATE = {"code": "create"}
# What each resource type answers, and what the service makes of it.
_RESOURCES = {
    "Patient": ([_READ, _CREATE], "created in a transaction or batch Bundle (with its Encounter: the admission); "
                                  "read back: the id and gender the service keeps"),
    "Encounter": ([_READ, _CREATE], "in a transaction or batch Bundle: the ICU stay, stored as the patient's "
                                    "admission; a location with a later period.start is a transfer, status finished "
                                    "(period.end) the discharge; its id (else identifier) is kept and named by the "
                                    "stay's RiskAssessments and Flags (encounter); read back by that id: the stay as "
                                    "the service knows it (status, class, subject, period, unit). One sent with an "
                                    "identifier only has no id to read"),
    "Observation": ([_READ, _CREATE], "LOINC-coded vital signs and labs (POST /fhir/Observation, or in a Bundle); "
                                      "read back as the stored observation: one Observation per patient and time, "
                                      "its values as components"),
    "RiskAssessment": ([_READ, _SEARCH], "one per scored observation, with the same id as its Observation; "
                                         "encounter: the stay's Encounter as sent, when known"),
    "Flag": ([_READ, _SEARCH], "one per alarm: active until resolved; encounter: the stay's Encounter as sent, "
                               "when known"),
}


def capability_statement(base: str, software: str, version: str, started: dt.datetime) -> dict:
    resources = []
    for rtype, (interactions, doc) in _RESOURCES.items():
        entry = {"type": rtype, "interaction": interactions, "documentation": doc}
        if rtype in SEARCHES:
            entry["searchParam"] = [{"name": p.name, "type": p.type, "documentation": p.doc}
                                    for p in SEARCHES[rtype] + PAGING if p.name != "_format"]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement", "status": "active", "date": instant(started), "kind": "instance",
        "software": {"name": software, "version": version},
        "implementation": {"description": f"{software}: sepsis risk from streamed ICU observations", "url": base},
        "fhirVersion": "4.0.1", "format": list(FORMATS),
        "rest": [{
            "mode": "server",
            "documentation": "Searches are strict: an unknown or malformed parameter is a 400 OperationOutcome, "
                             "never ignored. Pages: _count and _offset, with Bundle.link self, first, previous "
                             "and next. Location resources are read inside a Bundle for the unit, not stored.",
            "security": {"description": "every interaction but this statement needs an API key in the X-API-Key "
                                        "header: role ingest to create, viewer to read and search"},
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch", "documentation": "all or nothing, as a "
                                                                                         "transaction"}],
        }],
    }
