"""Names with parameters in one string: ``"ve:sigma_min=0.002,sigma_max=80"``.

The command line names an SDE, a mixture preset or any other registered object by one word;
:func:`parse_spec` lets that word carry the object's constructor arguments,

    NAME[:KEY=VALUE[,KEY=VALUE...]]     e.g. ve:sigma_min=0.002,sigma_max=80, ring8:classes=2

Values are numbers where they read as one (``80`` an int, ``0.002`` and ``1e-3`` floats),
``true``/``false`` and ``null`` as in YAML, anything else a string. :func:`build_spec`
checks the keys against the signature of the constructor, so a misspelt parameter is an
error that lists the real ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import yaml


class SpecError(ValueError):
    """A malformed ``NAME:KEY=VALUE,...`` string, or parameters the object does not take."""


def parse_spec(text: str, what: str = "name", example: str = "ve:sigma_min=0.002") -> tuple[
        str, dict[str, Any]]:
    """``"name:k=v,k2=v2"`` -> ``("name", {"k": v, "k2": v2})`` (module docstring)."""
    name, sep, rest = str(text).strip().partition(":")
    name = name.strip()
    if not name:
        raise SpecError(f"{what} {text!r} has no name; write NAME or NAME:KEY=VALUE,... "
                        f"(e.g. {example})")
    params: dict[str, Any] = {}
    if sep and not rest.strip():
        raise SpecError(f"{what} {text!r} ends with ':' but gives no KEY=VALUE; drop the ':' or "
                        f"add parameters (e.g. {example})")
    for item in rest.split(",") if rest.strip() else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or not value.strip():
            raise SpecError(f"{what} {text!r}: {item.strip()!r} is not KEY=VALUE; parameters "
                            f"are comma-separated KEY=VALUE pairs (e.g. {example})")
        if key in params:
            raise SpecError(f"{what} {text!r} gives {key!r} twice")
        params[key] = _value(value.strip())
    return name, params


def _value(text: str) -> Any:
    """An int, a float (``1e-3`` too, which YAML 1.1 reads as a string), else a YAML scalar
    (``true``, ``null``), else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, bool | None) else text


def check_params(fn: Callable[..., Any], params: dict[str, Any], what: str,
                 example: str = "", extra: tuple[str, ...] = ()) -> None:
    """Refuse keys that ``fn`` (or ``extra``) does not take, naming the ones it does."""
    sig = inspect.signature(fn)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    known = [k for k, p in sig.parameters.items()
             if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    known += [k for k in extra if k not in known]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise SpecError(f"{what} takes no parameter {', '.join(map(repr, unknown))}; its "
                        f"parameters: {', '.join(known) or '(none)'}"
                        + (f" (e.g. {example})" if example else ""))


def build_spec(text: str, lookup: Callable[[str], Callable[..., Any]], what: str,
               example: str) -> Any:
    """Parse ``text`` and call ``lookup(name)(**params)``; every failure is one
    :class:`SpecError` that names ``what`` and shows ``example``."""
    name, params = parse_spec(text, what, example)
    try:
        factory = lookup(name)
    except KeyError as err:
        raise SpecError(f"{what} {text!r}: {err.args[0] if err.args else err}") from None
    check_params(factory, params, f"{what} {name!r}", example)
    try:
        return factory(**params)
    except (TypeError, ValueError) as err:
        raise SpecError(f"{what} {text!r}: {err}") from None


__all__ = ["SpecError", "build_spec", "check_params", "parse_spec"]
