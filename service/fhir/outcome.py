"""Refusals as FHIR OperationOutcome: each problem names the resource (entry index, type, id), the
element (a FHIRPath-like expression) and the reason."""
from __future__ import annotations

from dataclasses import dataclass

# Like the JSON API (service/errors.py): the first problems are reported, the rest counted.
MAX_ISSUES = 20


@dataclass(frozen=True)
class Problem:
    expression: str        # e.g. Bundle.entry[3].resource.valueQuantity.unit
    reason: str
    resource: str = ""     # e.g. "Bundle.entry[3] (Observation/hr-1)"
    code: str = "invalid"  # the OperationOutcome issue type (http://hl7.org/fhir/issue-type)


class Refusal(Exception):
    """A request refused as a whole: nothing was stored."""

    def __init__(self, status: int, problems: list[Problem]):
        super().__init__("; ".join(f"{p.expression}: {p.reason}" for p in problems[:3]))
        self.status = status
        self.problems = problems


def issue(p: Problem, severity: str = "error") -> dict:
    where = f"{p.resource}: " if p.resource else ""
    return {"severity": severity, "code": p.code, "diagnostics": where + p.reason, "expression": [p.expression]}


def operation_outcome(problems: list[Problem], stored_nothing: bool = True) -> dict:
    issues = [issue(p) for p in problems[:MAX_ISSUES]]
    if len(problems) > MAX_ISSUES:
        issues.append({"severity": "error", "code": "too-costly",
                       "diagnostics": f"and {len(problems) - MAX_ISSUES} more problems ({len(problems)} in all)"})
    if stored_nothing and issues:
        issues[0]["diagnostics"] += " (nothing was stored)"
    return {"resourceType": "OperationOutcome", "issue": issues}
