"""The ``senet`` command line: a thin shell over functions a user can also call from Python.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its arguments and sets
``func`` to its handler; ``COMMANDS`` lists them. Errors a user can fix (bad names, paths, values)
end the command with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

__all__ = ["build_parser", "main"]


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered model names")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'se_*'")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    from .models import list_models

    print("\n".join(list_models(args.pattern)))
    return 0


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="parameters and multiply-adds, beside the paper's figures")
    p.add_argument("names", nargs="*", help="model names (default: every registered model)")
    p.add_argument("--input-size", type=int, default=None, help="image side (default: the model's own)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    from .analysis.profile import profile
    from .models import list_models, model_info
    from .paper import paper_figures

    names = args.names or list_models()
    rows = []
    for name in names:
        info = model_info(name)
        size = (info.input_size[0], args.input_size, args.input_size) if args.input_size else None
        prof = profile(name, size)
        paper = paper_figures(name)
        rows.append(
            {**prof.as_dict(), "paper_params_m": paper.get("params_m"), "paper_gmacs": paper.get("gmacs")}
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0

    def fmt(v: float | None, digits: int) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    header = f"{'model':<28} {'input':>9} {'params (M)':>11} {'paper':>7} {'GMACs':>8} {'paper':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        size = "x".join(str(s) for s in r["input_size"][1:])
        print(
            f"{r['name']:<28} {size:>9} {r['params_m']:>11.3f} {fmt(r['paper_params_m'], 1):>7} "
            f"{r['gmacs']:>8.3f} {fmt(r['paper_gmacs'], 2):>7}"
        )
    print(
        "\nGMACs = multiply-adds (the paper's 'GFLOPs'); paper figures: Tables 2-3 and Sec. 6-7 (TPAMI)."
    )
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_list, _add_profile]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="senet", description="Squeeze-and-Excitation Networks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``senet`` console command (also ``python -m senet``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"senet {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
