"""The ``scoregen`` command line: ``scoregen <command> [options]``.

Every module ``scoregen/commands/<name>.py`` is a subcommand, found with ``pkgutil``: it
exposes ``add_arguments(parser)`` and ``run(args) -> int``, and the first line of its
docstring is the command's help. A new command is a new file; nothing here changes.
Expected failures (bad config, missing data, corrupt checkpoint, a run folder in use,
diverged training, non-finite samples, an output location scoregen may not write, file-system
errors, running out of memory) print one ``error:`` line and return 1; warnings print one
``warning:`` line each; Ctrl-C prints ``interrupted`` and returns 130; a closed pipe on stdout
ends quietly with 141. Bad flags are argparse's: usage and one error line, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import re
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

import scoregen
from scoregen import commands


def discover_commands() -> dict[str, ModuleType]:
    """``{name: module}`` for every command module in :mod:`scoregen.commands`.

    A module that fails to import is skipped with a warning on stderr, so one broken
    command never takes the others down.
    """
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{commands.__name__}.{info.name}")
        except Exception as err:
            print(f"scoregen: warning: command {info.name!r} failed to load: {err}",
                  file=sys.stderr)
            continue
        if hasattr(module, "add_arguments") and hasattr(module, "run"):
            found[info.name.replace("_", "-")] = module
    return found


def _help_line(module: ModuleType) -> str:
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per discovered command."""
    parser = argparse.ArgumentParser(
        prog="scoregen",
        description="Score-based diffusion models: train, sample, evaluate, compare.",
    )
    parser.add_argument("--version", action="version", version=f"scoregen {scoregen.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in discover_commands().items():
        p = sub.add_parser(name, help=_help_line(module), description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    from scoregen.infra.distributed import DistributedError
    from scoregen.training import TrainingDivergedError

    return (ValueError, KeyError, OSError, TrainingDivergedError, DistributedError)


def out_of_memory(err: BaseException) -> str | None:
    """What to say when ``err`` is running out of memory (``None``: it is not): how large the
    failed allocation was, when the allocator says, and what to do."""
    text = str(err)
    if not (isinstance(err, MemoryError) or "can't allocate memory" in text
            or "out of memory" in text.lower()):
        return None
    asked = re.search(r"allocate (\d+) bytes", text)
    size = f" (one array needed {int(asked.group(1)) / 1e9:.3g} GB)" if asked else (
        f" ({text.splitlines()[0]})" if text else "")
    have = ""
    with contextlib.suppress(ValueError, OSError, AttributeError):
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        have = f"; this machine has {total / 1e9:.3g} GB"
    return (f"out of memory{size}{have}: ask for less (fewer samples -n, steps or NFE, a "
            "smaller batch size, dataset or network) and try again")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``scoregen`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 1

    def show(message: Warning | str, *_: object, **__: object) -> None:
        print(f"scoregen {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            return int(args._run(args) or 0)
    except BrokenPipeError:  # the reader went away (`scoregen list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it
    except _expected_errors() as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        if isinstance(err, OSError) and err.filename is not None and err.strerror:
            msg = f"{err.filename}: {err.strerror}"
        print(f"scoregen {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as err:
        message = out_of_memory(err)
        if message is None:
            raise
        print(f"scoregen {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"scoregen {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
