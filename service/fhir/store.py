"""A mapped bundle into the service: its admissions and scored observations written by the one
write the JSON API uses (`Ingestor.write`), in one transaction, so a refused bundle stores nothing,
its admissions included. Every refusal names the entry it blames, by the index the write reports
(RowConflict, AdmissionConflict) or the element a time came from (Invalid)."""
from __future__ import annotations

from service import schemas
from service.errors import AdmissionConflict, Conflict, Invalid, RowConflict
from service.fhir.mapping import Mapped
from service.fhir.outcome import Problem, Refusal
from service.patients.admission import Admitting


def store(services, mapped: Mapped) -> tuple[list[schemas.PredictResult], dict[str, bool]]:
    """(one result per group, in group order; patient id -> whether this bundle admitted them)."""
    limit = services.settings.max_batch_rows
    if len(mapped.observations) > limit:
        raise Refusal(413, [Problem("Bundle.entry", f"{len(mapped.observations)} scored observations (patient and time "
                                                    f"pairs); this service takes at most {limit} per request "
                                                    "(SEPSIS_MAX_BATCH_ROWS): split the bundle", "Bundle", "too-costly")])
    labels = {a.expression: a.label for a in mapped.admissions} | {g.times[0][0]: g.times[0][1] for g in mapped.groups}
    # A feed's key: a conflicting admission is named, not how the stored patient came to be.
    admitting = Admitting([a.admission for a in mapped.admissions], reveal=False)
    try:
        results, _, created = services.ingestor.write(
            mapped.observations, admitting, time_field=lambda i: mapped.groups[i].times[0][0],
            admission_field=lambda i: mapped.admissions[i].expression, source="fhir")
    except Invalid as err:  # times from the future, named by their elements
        raise Refusal(422, [Problem(e["field"], e["reason"], labels.get(e["field"], ""), "business-rule")
                            for e in err.errors or []]) from None
    except RowConflict as err:
        expression, label = mapped.groups[err.index].times[0]
        raise Refusal(409, [Problem(expression, err.reason, label, "conflict")]) from None
    except AdmissionConflict as err:
        a = mapped.admissions[err.index]
        raise Refusal(409, [Problem(a.expression, err.reason, a.label, "conflict")]) from None
    except Conflict as err:  # the patients kept changing under concurrent writers
        raise Refusal(409, [Problem("Bundle", err.detail, "Bundle", "conflict")]) from None
    return results, created
