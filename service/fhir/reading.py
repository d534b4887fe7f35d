"""Request bodies to validated FHIR resources (`fhir.resources.R4B`), every problem located by a
FHIRPath-like expression. Pure: bytes in, resources or problems out."""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from service.fhir.outcome import Problem, Refusal

# What a feed may send: who (Patient), the ICU stay (Encounter, its Location) and what was measured.
ACCEPTED = ("Patient", "Encounter", "Location", "Observation")
BUNDLE_TYPES = ("transaction", "batch")
MEDIA_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


@dataclass(frozen=True)
class Entry:
    path: str            # "Bundle.entry[3].resource", or "Observation" for a resource posted alone
    label: str           # "Bundle.entry[3] (Observation/hr-1)"
    full_url: str | None
    resource: object     # a fhir.resources model; None for an ignored entry
    ignored: str | None = None  # why the entry is not read (a FHIR resource type the service does not read)


def _loc(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _problems(err: ValidationError, path: str, label: str) -> list[Problem]:
    out = []
    for e in err.errors():
        reason = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        code = "required" if e.get("type") == "missing" else "structure" if e.get("type") == "extra_forbidden" else "value"
        out.append(Problem(path + _loc(e.get("loc", ())), reason, label, code))
    return out


def media_type_ok(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in MEDIA_TYPES


# What can put a lone surrogate in a decoded string: a \uD800-\uDFFF escape, or its UTF-8-like bytes
# (ED A0-BF ..), which json.loads decodes with "surrogatepass"; a body with neither is not walked.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def _not_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone UTF-16 surrogate: not a character, and no answer could echo it
        return True
    return False


def lone_surrogate_at(value: object, where: str) -> str | None:
    """Where the first string or key holding a lone UTF-16 surrogate is, None when there is none."""
    pending = [(value, where)]
    while pending:
        value, where = pending.pop()
        if isinstance(value, str) and _not_text(value):
            return where
        if isinstance(value, dict):
            for key, item in value.items():
                if _not_text(key):
                    return f"{where} (a key)"
                pending.append((item, f"{where}.{key[:40]}"))
        elif isinstance(value, list):
            pending += [(item, f"{where}[{i}]") for i, item in enumerate(value)]
    return None


def parse_json(body: bytes) -> object:
    """The body as JSON, or a 400 naming why it could not be read."""
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as err:  # RecursionError: nesting deeper than the parser goes
        raise Refusal(400, [Problem("Bundle", f"the body is not JSON ({type(err).__name__}: {str(err)[:120]})",
                                    code="structure")]) from None
    if _SURROGATE_ESCAPE.search(body):
        root = raw.get("resourceType") if isinstance(raw, dict) else None
        root = root if isinstance(root, str) and len(root) <= 40 and not _not_text(root) else "body"
        if where := lone_surrogate_at(raw, root):
            raise Refusal(400, [Problem(where, "holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape without its "
                                               "pair), which is not a character", code="structure")])
    return raw


def _label(path: str, raw: dict) -> str:
    rid = raw.get("id")
    rtype = raw.get("resourceType")
    name = f"{rtype}/{rid}" if isinstance(rid, str) and isinstance(rtype, str) else str(rtype)[:40]
    return f"{path.removesuffix('.resource')} ({name})"


def _fhir_type(rtype: object) -> bool:
    if not isinstance(rtype, str) or not rtype.isidentifier():
        return False
    try:
        get_fhir_model_class(rtype)
    except ValueError:
        return False
    return True


def read_resource(raw: object, path: str, allowed: tuple[str, ...] = ACCEPTED,
                  ignore_others: bool = False) -> tuple[Entry | None, list[Problem]]:
    """The resource validated by its model. `ignore_others`: a resource of another FHIR R4 type
    (a Practitioner, Device, Specimen a feed sends along) is not validated but ignored, its Entry
    saying why; a resourceType that is no FHIR type is refused all the same."""
    if not isinstance(raw, dict):
        return None, [Problem(path, "must be a JSON object (a FHIR resource)", code="structure")]
    rtype = raw.get("resourceType")
    label = _label(path, raw)
    if rtype not in allowed and ignore_others and _fhir_type(rtype):
        return Entry(path, label, None, None, f"a {rtype} is not read by this service (it reads "
                                              f"{', '.join(allowed)}): ignored, nothing stored from it"), []
    if rtype not in allowed:
        shown = rtype if isinstance(rtype, str) and len(rtype) <= 40 else "missing" if rtype is None else "not a name"
        return None, [Problem(f"{path}.resourceType", f"resourceType {shown!r} is not accepted here; "
                              f"accepted: {', '.join(allowed)}", label, "not-supported")]
    try:
        resource = get_fhir_model_class(rtype).model_validate(raw)
    except ValidationError as err:
        return None, _problems(err, path, label)
    except Exception as err:  # fhir.resources raises KeyError/TypeError on some junk (an unknown contained type)
        return None, [Problem(path, f"cannot be read as a FHIR R4 {rtype} ({type(err).__name__})", label, "structure")]
    return Entry(path, label, None, resource), []


def _instant(value) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(value)
        return t.astimezone(dt.timezone.utc) if t.utcoffset() is not None else None
    except (TypeError, ValueError, OverflowError):
        return None


def count_scored(entries: list[dict]) -> int:
    """The Observations with a value a bundle holds (each one observation the service files), read
    from the raw JSON before anything is validated. What the mapping would refuse (no subject, no
    time with a zone) is not counted, so a bundle is never refused for more than it has."""
    n = 0
    for e in entries:
        r = e.get("resource")
        if not isinstance(r, dict) or r.get("resourceType") != "Observation":
            continue
        ref = r["subject"].get("reference") if isinstance(r.get("subject"), dict) else None
        period = r.get("effectivePeriod")
        start = period.get("start") if isinstance(period, dict) else None
        when = _instant(start or r.get("effectiveInstant") or r.get("effectiveDateTime"))
        if isinstance(ref, str) and when is not None and any(k.startswith("value") or k == "component" for k in r):
            n += 1
    return n


def _refuse_shared_full_urls(entries: list[dict], shells) -> None:
    """A 400 naming both entries of each fullUrl given twice: references resolve through fullUrls,
    and one shared by two resources would resolve to whichever came last (an Observation filed
    under the wrong Patient)."""
    first: dict[str, int] = {}
    problems = []
    for i, shell in enumerate(shells):
        url = shell.fullUrl
        if url is None:
            continue
        if url in first:
            j = first[url]
            raw = entries[i].get("resource")
            label = _label(f"Bundle.entry[{i}]", raw) if isinstance(raw, dict) else f"Bundle.entry[{i}]"
            problems.append(Problem(f"Bundle.entry[{i}].fullUrl", f"Bundle.entry[{j}] and Bundle.entry[{i}] share the "
                                    f"fullUrl {url[:120]!r}: each entry needs its own (references to it could not "
                                    "tell them apart)", label, "duplicate"))
        else:
            first[url] = i
    if problems:
        raise Refusal(400, problems)


def read_bundle(raw: object, max_scored: int | None = None) -> tuple[str, list[Entry]]:
    """A transaction or batch Bundle's entries, each resource validated by its own model (so an
    unknown or refused type is named at its entry); a Refusal(422) listing every problem. Over
    `max_scored` patient and time pairs is a 413 before any entry is validated (50,000 entries took
    9.5 s to validate before the cap refused them)."""
    if not isinstance(raw, dict) or raw.get("resourceType") != "Bundle":
        raise Refusal(422, [Problem("Bundle", "the body must be a FHIR Bundle (a JSON object with resourceType "
                                              "\"Bundle\") of type transaction or batch", code="structure")])
    entries = raw.get("entry", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise Refusal(422, [Problem("Bundle.entry", "must be a list of entry objects", code="structure")])
    if max_scored is not None and (n := count_scored(entries)) > max_scored:
        raise Refusal(413, [Problem("Bundle.entry", f"{n} Observations with values; this service "
                                                    f"takes at most {max_scored} per request (SEPSIS_MAX_BATCH_ROWS): "
                                                    "split the bundle", "Bundle", "too-costly")])
    problems: list[Problem] = []
    shell = {**raw, "entry": [{k: v for k, v in e.items() if k != "resource"} for e in entries]}
    if not entries:
        shell.pop("entry")
    try:
        bundle = Bundle.model_validate(shell)
    except ValidationError as err:
        raise Refusal(422, _problems(err, "Bundle", "Bundle")) from None
    except Exception as err:
        raise Refusal(422, [Problem("Bundle", f"cannot be read as a FHIR R4 Bundle ({type(err).__name__})",
                                    code="structure")]) from None
    if bundle.type not in BUNDLE_TYPES:
        problems.append(Problem("Bundle.type", f"must be one of {', '.join(BUNDLE_TYPES)}, got {str(bundle.type)[:40]!r}",
                                "Bundle", "not-supported"))
    if not entries:
        problems.append(Problem("Bundle.entry", "the bundle has no entries", "Bundle", "required"))
    _refuse_shared_full_urls(entries, bundle.entry or [])
    out = []
    for i, (e, shell_entry) in enumerate(zip(entries, bundle.entry or [])):
        path = f"Bundle.entry[{i}].resource"
        if "resource" not in e:
            problems.append(Problem(path, "every entry needs a resource", f"Bundle.entry[{i}]", "required"))
            continue
        entry, found = read_resource(e["resource"], path, ignore_others=True)
        problems += found
        if entry is not None:
            out.append(Entry(entry.path, entry.label, shell_entry.fullUrl, entry.resource, entry.ignored))
    if problems:
        raise Refusal(422, problems)
    return bundle.type, out
