"""Subcommands of ``scoregen``: one module per command, discovered by :mod:`scoregen.cli`.

A command module has a docstring (its first line is the help), ``add_arguments(parser)``
and ``run(args) -> int``.
"""
