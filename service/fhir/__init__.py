"""HL7 FHIR R4 in and out: Bundles and Observations mapped to the model's inputs, risks served as
RiskAssessment and alarms as Flag. Resources are validated with `fhir.resources.R4B` (the R4B
models of fhir.resources 8, identical to R4 for Bundle, Patient, Encounter, Location,
Observation, RiskAssessment, Flag and OperationOutcome); `docs/fhir.md` is the guide."""
