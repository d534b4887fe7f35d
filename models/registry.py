"""Find shipped models: `<root>/<name>/<version>/{model.onnx, model_card.json}`.

The root is the `models/` package directory unless `SEPSIS_MODELS_DIR` says otherwise; the default
model name is "sepsis-cfc" unless `SEPSIS_MODEL` says otherwise. Both are read at call time, so a
process (or a test) can change them without re-importing.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from models.card import ModelCard, ModelCardError, load_card

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "sepsis-cfc"
ENV_ROOT = "SEPSIS_MODELS_DIR"
ENV_MODEL = "SEPSIS_MODEL"
ONNX_FILE = "model.onnx"
CARD_FILE = "model_card.json"


def models_root() -> Path:
    """The registry root in effect now (env override, else the package directory)."""
    env = os.environ.get(ENV_ROOT)
    return Path(env).expanduser() if env else PACKAGE_DIR


class ModelNotFoundError(LookupError):
    """No model matches the requested name/version; the message lists what the registry holds and
    where it is, `public` the same without the server's paths (what an HTTP answer may show)."""

    def __init__(self, message: str, public: str):
        super().__init__(message)
        self.public = public


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    path: Path  # the version folder
    card: ModelCard

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def card_path(self) -> Path:
        return self.path / CARD_FILE


def version_key(version: str) -> tuple:
    """Numeric versions sort numerically ("10" after "9") and after any non-numeric label."""
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


def _scan(root: Path) -> tuple[list[ModelInfo], list[str]]:
    """All complete model folders under root, plus a line for each folder that is broken."""
    infos: list[ModelInfo] = []
    problems: list[str] = []
    if not root.is_dir():
        return infos, problems
    for name_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        for version_dir in sorted(p for p in name_dir.iterdir() if p.is_dir()):
            if not ((version_dir / ONNX_FILE).is_file() and (version_dir / CARD_FILE).is_file()):
                continue  # not a model folder (or an export still being written)
            try:
                card = load_card(version_dir / CARD_FILE)
            except ModelCardError as err:
                problems.append(str(err))
                continue
            if (card.name, card.version) != (name_dir.name, version_dir.name):
                problems.append(f"{version_dir / CARD_FILE}: card says {card.name} version {card.version} "
                                f"but the folder is {name_dir.name}/{version_dir.name}")
                continue
            infos.append(ModelInfo(card.name, card.version, version_dir, card))
    infos.sort(key=lambda i: (i.name, version_key(i.version)))
    return infos, problems


def list_models(root: str | Path | None = None) -> list[ModelInfo]:
    """Every valid model under root, sorted by name then version. Folders lacking model.onnx or
    model_card.json are skipped; folders with a broken card are skipped with a warning."""
    infos, problems = _scan(Path(root) if root is not None else models_root())
    for problem in problems:
        warnings.warn(f"skipping model folder: {problem}", stacklevel=2)
    return infos


def _inventory(infos: list[ModelInfo]) -> str:
    if not infos:
        return "holds no models"
    by_name: dict[str, list[str]] = {}
    for info in infos:
        by_name.setdefault(info.name, []).append(info.version)
    return "holds: " + "; ".join(f"{n} (versions {', '.join(v)})" for n, v in by_name.items())


def resolve(name: str | None = None, version: str | int | None = None,
            root: str | Path | None = None) -> ModelInfo:
    """The requested model; by default `$SEPSIS_MODEL` or "sepsis-cfc", at its highest numeric version."""
    root_path = Path(root) if root is not None else models_root()
    name = name or os.environ.get(ENV_MODEL) or DEFAULT_MODEL
    version = None if version is None else str(version)
    infos, problems = _scan(root_path)
    candidates = [i for i in infos if i.name == name]
    if version is not None:
        match = [i for i in candidates if i.version == version]
        if match:
            return match[0]
        wanted = root_path / name / version
        broken = [p for p in problems if p.startswith(str(wanted) + os.sep)]
        if broken:
            raise ModelCardError(broken[0])
        what = f"no model {name!r} version {version!r}"
        raise ModelNotFoundError(f"{what} ({wanted}); the registry at {root_path} {_inventory(infos)}",
                                 f"{what}; the registry {_inventory(infos)}")
    numeric = [i for i in candidates if i.version.isdigit()]
    if numeric:
        return max(numeric, key=lambda i: int(i.version))
    broken = [p for p in problems if p.startswith(str(root_path / name) + os.sep)]
    what = f"{'no numbered version of' if candidates else 'no model named'} {name!r}"
    held = _inventory(infos)
    if broken:
        raise ModelNotFoundError(f"{what} ({len(broken)} broken: {broken[0]}); the registry at {root_path} {held}",
                                 f"{what} ({len(broken)} broken); the registry {held}")
    raise ModelNotFoundError(f"{what}; the registry at {root_path} {held}", f"{what}; the registry {held}")


def format_table(infos: list[ModelInfo]) -> str:
    header = ("NAME", "VERSION", "CORE", "STATE", "THRESHOLD", "AUROC", "UTILITY", "CREATED", "PATH")

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    rows = [header] + [
        (i.name, i.version, i.card.core, str(i.card.state_size), f"{i.card.threshold:.3f}",
         num(i.card.metrics.auroc), num(i.card.metrics.utility), i.card.created.date().isoformat(), str(i.path))
        for i in infos
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description="The shipped-model registry.")
    parser.add_argument("--root", type=Path, default=None,
                        help=f"registry root (default ${ENV_ROOT} or {PACKAGE_DIR})")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print a table of every model version")
    res = sub.add_parser("resolve", help="print the folder of the model a service would load")
    res.add_argument("name", nargs="?", default=None)
    res.add_argument("--version", default=None)
    args = parser.parse_args(argv)
    root = args.root if args.root is not None else models_root()

    if args.command == "list":
        infos, problems = _scan(root)
        print(format_table(infos) if infos else f"no models under {root}")
        for problem in problems:
            print(f"skipped: {problem}", file=sys.stderr)
        return 0
    try:
        info = resolve(args.name, args.version, root)
    except (ModelNotFoundError, ModelCardError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(info.path)
    return 0
