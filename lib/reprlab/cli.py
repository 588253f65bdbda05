"""Command line: ``python -m reprlab <chapter> <verb> [...] [--json]``.

Each chapter package (``textures``, ``scenes``, ``dgp``, ``v1``) has a ``cli`` module
with ``register(subparsers)`` that adds its verbs; handlers import heavy modules
lazily so ``--help`` stays fast. A handler returns a JSON-serialisable report dict;
this module prints it as JSON with ``--json`` or as readable ``key: value`` lines.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from reprlab.io import to_jsonable

CHAPTERS: tuple[tuple[str, str], ...] = (
    ("textures", "ch3: texture synthesis with random shallow networks"),
    ("scenes", "ch4: ECON scene decomposition and generation"),
    ("dgp", "ch5: compositional uncertainty in deep Gaussian processes"),
    ("v1", "ch6-7: V1 data, the digital twin, clustering, in silico experiments"),
)

Handler = Callable[[argparse.Namespace], dict]


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add the shared ``--json`` flag to a verb's parser."""
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _format_report(report: Any, indent: int = 0) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(report, dict):
        for key, value in report.items():
            if isinstance(value, (dict, list)) and value and not _is_flat_list(value):
                lines.append(f"{pad}{key}:")
                lines.extend(_format_report(value, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_short(value)}")
    elif isinstance(report, list):
        for item in report:
            sub = _format_report(item, indent + 1)
            lines.append(f"{pad}- " + sub[0].strip() if sub else f"{pad}-")
            lines.extend(sub[1:])
    else:
        lines.append(f"{pad}{_short(report)}")
    return lines


def _is_flat_list(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reprlab",
        description="reprlab: image representations in deep networks and digital twins of V1.",
    )
    from reprlab import __version__

    parser.add_argument("--version", action="version", version=f"reprlab {__version__}")
    chapters = parser.add_subparsers(dest="chapter", metavar="CHAPTER")
    for name, help_text in CHAPTERS:
        try:
            module = importlib.import_module(f"reprlab.{name}.cli")
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith(f"reprlab.{name}"):
                continue  # chapter not installed in this build
            raise
        sub = chapters.add_parser(name, help=help_text, description=help_text)
        verbs = sub.add_subparsers(dest="verb", metavar="VERB")
        module.register(verbs)
        sub.set_defaults(_parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for user errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        (getattr(args, "_parser", None) or parser).print_help()
        return 2
    try:
        report = handler(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        if getattr(args, "json", False):
            print(json.dumps({"error": type(err).__name__, "message": str(msg)}))
        else:
            print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if report is None:
        return 0
    if getattr(args, "json", False):
        print(json.dumps(to_jsonable(report), indent=2))
    else:
        print("\n".join(_format_report(to_jsonable(report))))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
