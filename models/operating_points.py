"""A model's operating points: alarm thresholds measured on validation, with their test figures,
and risk bands that say in words what a risk meant on validation.

`models/<name>/<version>/operating_points.json` is written by
`python -m training sepsis operating-points` and validates as `OperatingPoints`. The service reads
it with `load_operating_points(model_dir)` (None when a model ships without one) and turns a risk
into words with `risk_in_words`. The figures are defined in `definitions` of the file itself, so a
reader never has to guess what "PPV" or "alarm" meant when they were measured.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.card import ModelCardError, _describe, load_card, read_json

FILENAME = "operating_points.json"
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

Fraction = float | None


class OperatingPointsError(ModelCardError):
    """An operating_points.json that is unreadable, invalid, or belongs to another model."""


class PointFigures(BaseModel):
    """What a ward sees at one threshold on one split. None means undefined on that split (e.g. no
    septic stay alarmed before onset, so no lead time) or, for a fixture, never measured."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sensitivity: Fraction = Field(ge=0.0, le=1.0)
    ppv: Fraction = Field(ge=0.0, le=1.0)
    alarms_per_patient_day: float | None = Field(ge=0.0)
    median_lead_time_hours: float | None
    utility: float | None = Field(le=1.0)
    # Added with models.alarm_figures (absent from older files, so optional): the window figures,
    # PPV per alarm, the red share, and what the unit's re-alert policy costs and catches when
    # every alarm is acknowledged at once.
    caught_in_window: Fraction = Field(default=None, ge=0.0, le=1.0)
    median_lead_time_in_window_hours: float | None = None
    ppv_alarms: Fraction = Field(default=None, ge=0.0, le=1.0)
    red_share: Fraction = Field(default=None, ge=0.0, le=1.0)
    policy_alarms_per_patient_day: float | None = Field(default=None, ge=0.0)
    policy_caught_in_window: Fraction = Field(default=None, ge=0.0, le=1.0)


class OperatingPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str = Field(pattern=_ID_PATTERN)   # "utility_optimum", "alarms_per_day_0.2", "sensitivity_0.8"
    label: str = Field(min_length=1)       # one line for a person: "at most 0.2 alarms per patient-day"
    threshold: float = Field(ge=0.0, le=1.0)
    validation: PointFigures
    test: PointFigures


class RiskBand(BaseModel):
    """Validation patient-hours with low <= risk < high (the last band includes 1)."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    low: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)
    words: str = Field(min_length=1)       # what a risk in this band meant, as measured
    validation_ppv: Fraction = Field(ge=0.0, le=1.0)  # share of the band's hours followed by the event
    validation_hours: int | None = Field(default=None, ge=0)
    test_ppv: Fraction = Field(default=None, ge=0.0, le=1.0)
    test_hours: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class AlarmPolicySettings(BaseModel):
    """The re-alert policy measured with the table (models.alarm_policy.AlarmPolicy less its
    threshold, which is the unit's operating point)."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rise_factor: float | None = Field(gt=1.0)      # re-alert at this x the acknowledged risk; None: off
    lockout_hours: float | None = Field(gt=0.0)    # re-alert when still above threshold this long after
    tiers: list[float] = Field(default_factory=list)  # escalation levels above the threshold
    chosen_by: str = Field(default="", description="how these values were chosen, in words")

    def at(self, threshold: float):
        """The `models.alarm_policy.AlarmPolicy` of a unit alarming at `threshold` (tiers at or
        below it do not apply)."""
        from models.alarm_policy import AlarmPolicy

        return AlarmPolicy(threshold, rise_factor=self.rise_factor, lockout_hours=self.lockout_hours,
                           tiers=tuple(t for t in self.tiers if t > threshold))


class OperatingPoints(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str = Field(min_length=1)
    version: str = Field(min_length=1)
    selected_on: str = Field(min_length=1)   # "validation" for a measured model
    definitions: dict[str, str] = Field(default_factory=dict)  # figure name -> how it was measured
    source: dict[str, object] = Field(default_factory=dict)    # data, split, command, commit
    points: list[OperatingPoint] = Field(min_length=1)
    risk_bands: list[RiskBand] = Field(min_length=1)
    default_point: str | None = None               # the point a unit gets unless it chooses another
    alarm_policy: AlarmPolicySettings | None = None

    @model_validator(mode="after")
    def _consistent(self):
        ids = [p.id for p in self.points]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"points: duplicate id {dup[0]!r}")
        if self.default_point is not None and self.default_point not in ids:
            raise ValueError(f"default_point: {self.default_point!r} is not one of the points ({', '.join(ids)})")
        bands = self.risk_bands
        if bands[0].low != 0.0 or bands[-1].high != 1.0:
            raise ValueError(f"risk_bands must cover [0, 1]: they span [{bands[0].low}, {bands[-1].high}]")
        for i, (a, b) in enumerate(zip(bands, bands[1:])):
            if a.high != b.low:
                raise ValueError(f"risk_bands {i} and {i + 1} must meet: {a.high} != {b.low}")
        return self

    def point(self, point_id: str) -> OperatingPoint:
        for p in self.points:
            if p.id == point_id:
                return p
        raise KeyError(f"no operating point {point_id!r}; have {', '.join(p.id for p in self.points)}")

    def default(self) -> OperatingPoint | None:
        """The table's default point; None when it names none (an older file)."""
        return None if self.default_point is None else self.point(self.default_point)

    def band(self, risk: float) -> RiskBand:
        for b in self.risk_bands:
            if b.low <= risk < b.high:
                return b
        return self.risk_bands[-1]  # risk == 1.0

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def parse_operating_points(data, source: str = FILENAME) -> OperatingPoints:
    if not isinstance(data, dict):
        raise OperatingPointsError(f"{source}: operating points must be a JSON object, got {type(data).__name__}")
    try:
        return OperatingPoints.model_validate(data)
    except ValidationError as err:
        raise OperatingPointsError(f"{source}: invalid operating points: {_describe(err)}") from None


def load_operating_points(model_dir: str | Path) -> OperatingPoints | None:
    """The model's operating points, or None when it ships without `operating_points.json`.

    An unreadable or invalid file, or one measured for another model than the folder's card,
    raises OperatingPointsError naming the file and the field."""
    path = Path(model_dir) / FILENAME
    try:
        data = read_json(path, "operating points", OperatingPointsError)
    except FileNotFoundError:
        return None
    points = parse_operating_points(data, str(path))
    card_path = Path(model_dir) / "model_card.json"
    if card_path.exists():
        card = load_card(card_path)
        for field, mine, theirs in (("model", points.model, card.name), ("version", points.version, card.version)):
            if mine != theirs:
                raise OperatingPointsError(f"{path}: field '{field}': {mine!r} does not match the model card's "
                                           f"{theirs!r} (measured for another model)")
    return points


# ---------------------------------------------------------------- words

def percent(risk: float) -> str:
    """A risk as a ward reads it: two significant figures below 10% (a 2.8% threshold must not
    read as 3%), whole percent above."""
    pct = 100.0 * risk
    if pct == 0:
        return "0%"
    return f"{pct:.2g}%" if pct < 10 else f"{pct:.0f}%"


def share_in_words(share: float | None) -> str:
    """0.05 -> "about 1 in 20"; 1/228 -> "about 1 in 230"; 0.3 -> "about 3 in 10"; None -> "too few to say"."""
    if share is None or not math.isfinite(share):
        return "too few to say"
    if share <= 0:
        return "none"
    if share < 0.095:
        n = 1 / share
        return f"about 1 in {round(n) if n < 20 else int(float(f'{n:.2g}'))}"  # no false precision
    return f"about {round(share * 10)} in 10"


def band_words(share: float | None, low: float, high: float, event: str) -> str:
    """The sentence stored in a risk band: what share of validation hours scored in [low, high)
    came before `event` (e.g. "within the 12 h before sepsis onset")."""
    if share is None or not math.isfinite(share):
        return f"on validation, too few patient-hours scored {percent(low)}–{percent(high)} to say how often they came {event}"
    return f"on validation, {share_in_words(share)} patient-hours that scored {percent(low)}–{percent(high)} came {event}"


def risk_in_words(points: OperatingPoints | None, risk: float, threshold: float) -> str:
    """'7.1% — below the alarm threshold (12%, utility optimum); on validation, about 1 in 20 ...'.

    `threshold` is the one in force (the unit's choice); it is named after the operating point it
    equals, if any. Without operating points only the comparison with the threshold is given."""
    for name, value in (("risk", risk), ("threshold", threshold)):
        # numbers.Real takes numpy scalars (a risk straight from the runtime is np.float32)
        if (not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value)
                or not 0.0 <= value <= 1.0):
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    shown, named = percent(risk), percent(threshold)
    if shown == named and risk != threshold:  # 2.77% against 2.7733%: show where the difference is
        shown, named = f"{100 * risk:.3g}%", f"{100 * threshold:.3g}%"
        if shown == named:
            shown, named = f"{100 * risk:.6g}%", f"{100 * threshold:.6g}%"
    if points is not None:
        match = next((p for p in points.points if math.isclose(p.threshold, threshold, rel_tol=1e-9, abs_tol=1e-12)), None)
        if match is not None:
            named += f", {match.label}"
    side = "at or above" if risk >= threshold else "below"
    text = f"{shown} — {side} the alarm threshold ({named})"
    if points is not None:
        text += f"; {points.band(risk).words}"
    return text
