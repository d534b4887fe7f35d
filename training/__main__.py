"""`python -m training <task> <command> ...`: each task's CLI lives in `training/<task>/cli.py`."""
from __future__ import annotations

import importlib
import sys

TASKS = ("sepsis", "nmnist", "quickdraw", "iam")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(f"usage: python -m training {{{','.join(TASKS)}}} <command> [options]")
        return 0 if argv else 2
    task, rest = argv[0], argv[1:]
    if task not in TASKS:
        print(f"error: unknown task {task!r}; choose one of {', '.join(TASKS)}", file=sys.stderr)
        return 2
    module = f"training.{task}.cli"
    if module not in sys.modules:  # importing PyTorch takes seconds: say so before the first line of work
        print(f"python -m training {task}: loading PyTorch and the {task} code ...", file=sys.stderr, flush=True)
    cli = importlib.import_module(module)
    return int(cli.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
