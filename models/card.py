"""The model card: what a shipped model is, how it was measured, and what it must not be used for.

Every `models/<name>/<version>/` folder carries a `model_card.json` that validates as `ModelCard`.
The runtime checks the ONNX graph against it, so a card that lies about the graph is caught at load.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.contract import FEATURES, MIN_OPSET, N_FEATURES  # noqa: F401  (re-exported)

# Names become folder names and URL path segments, so keep them to a safe alphabet.
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

Fraction = float | None


class ModelCardError(ValueError):
    """A model card that is missing, unreadable, or does not satisfy the schema."""


class TrainingData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    stays: int = Field(ge=0)
    rows: int = Field(ge=0)


class CardMetrics(BaseModel):
    """Held-out metrics at the card's threshold. None means undefined on that split (e.g. no
    septic stay was alarmed, so there is no lead time), never "not measured yet"."""

    # Evaluation code may record more (e.g. non_septic_alarmed); those keys are kept as-is.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    split: str = Field(min_length=1)
    auroc: Fraction = Field(ge=0.0, le=1.0)
    auprc: Fraction = Field(ge=0.0, le=1.0)
    utility: float | None = Field(le=1.0)
    alarms_per_patient_day: float | None = Field(ge=0.0)
    septic_alarmed_before_onset: Fraction = Field(ge=0.0, le=1.0)
    alarmed_stays_septic: Fraction = Field(ge=0.0, le=1.0)
    median_lead_time_hours: float | None


class ModelCard(BaseModel):
    # Unknown top-level keys are almost always typos of a required field; reject them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=_NAME_PATTERN)
    version: str = Field(pattern=_NAME_PATTERN)
    created: datetime
    source_commit: str = Field(min_length=1)
    training_data: TrainingData
    features: list[str]
    state_size: int = Field(ge=1)
    core: str = Field(min_length=1)
    hidden_size: int = Field(ge=1)
    opset: int = Field(ge=MIN_OPSET)
    threshold: float = Field(ge=0.0, le=1.0)
    threshold_selection: str = Field(min_length=1)
    metrics: CardMetrics
    intended_use: str = Field(min_length=1)
    limitations: list[str] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value):
        # A hand-written card often says "version": 2; the folder name is the text "2".
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("features")
    @classmethod
    def _features_in_order(cls, value: list[str]) -> list[str]:
        if list(value) != list(FEATURES):
            if len(value) != N_FEATURES:
                raise ValueError(f"must list the {N_FEATURES} PhysioNet 2019 feature columns, got {len(value)}")
            first = next(i for i, (a, b) in enumerate(zip(value, FEATURES)) if a != b)
            raise ValueError(f"must be the PhysioNet 2019 columns in file order; "
                             f"position {first} is {value[first]!r}, expected {FEATURES[first]!r}")
        return value

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<card>"
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "extra_forbidden":
            msg = "unknown field (not part of the model card schema)"
        parts.append(f"field '{loc}': {msg}")
    return "; ".join(parts)


def parse_card(data: dict, source: str = "<model card>") -> ModelCard:
    """Validate an already-decoded card; errors name `source` and every bad field."""
    try:
        return ModelCard.model_validate(data)
    except ValidationError as err:
        raise ModelCardError(f"{source}: invalid model card: {_describe(err)}") from None


def read_json(path: Path, what: str, error: type[ModelCardError] = ModelCardError):
    """A JSON file's content; `error` names the file (and the line of a JSON error) for anything
    unreadable. A missing file raises FileNotFoundError: each caller says what absence means."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read {what}: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{path}: line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}") from None


def load_card(path: str | Path) -> ModelCard:
    """Read and validate a model_card.json; a ModelCardError names the file and the bad field."""
    path = Path(path)
    try:
        data = read_json(path, "model card")
    except FileNotFoundError:
        raise ModelCardError(f"{path}: model card not found") from None
    if not isinstance(data, dict):
        raise ModelCardError(f"{path}: a model card must be a JSON object, got {type(data).__name__}")
    return parse_card(data, str(path))
