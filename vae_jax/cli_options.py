"""Command-line options built from config dataclasses: one ``--field-name`` per field, with the field's
default, help (``metadata["help"]``) and checks (``positive``, ``choices``), so each is written once."""

import argparse
import dataclasses
import math
import types
import typing

from vae_jax.config import MAX_COUNT, ModelConfig


def parse_int(text: str, positive: bool) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or (positive and value <= 0):
        raise argparse.ArgumentTypeError(f"expected a {'positive ' if positive else ''}integer, got {text!r}")
    if positive and value > MAX_COUNT:  # counts index int32 arrays
        raise argparse.ArgumentTypeError(f"expected at most {MAX_COUNT:,} (counts are 32-bit integers), got {text!r}")
    return value


def _parse_float(text: str, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if (positive and not 0 < value < math.inf) or math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a {'positive ' if positive else ''}number, got {text!r}")
    return value


def _parse_widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(parse_int(part, positive=True) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive widths such as 200,200, "
                                         f"got {text!r}") from None


def _parse_names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _parse_sigma(text: str):
    return "learned" if text == "learned" else _parse_float(text, positive=True)


def _without_none(hint):
    """X | None -> X; other hints unchanged."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(h for h in typing.get_args(hint) if h is not type(None))
    return hint


def _parser_for(field: dataclasses.Field, hint):
    """The argparse ``type`` of a config field, from its annotation and ``positive`` metadata."""
    positive = field.metadata.get("positive", False)
    base = _without_none(hint)
    if field.name == "sigma":
        return _parse_sigma  # a number, or "learned" (sets learn_sigma)
    if typing.get_origin(base) is tuple:
        return _parse_widths if typing.get_args(base)[0] is int else _parse_names
    if base is int:
        return lambda text: parse_int(text, positive)
    if base is float:
        return lambda text: _parse_float(text, positive)
    return str


def add_config_options(parser: argparse.ArgumentParser, cls, choices: dict | None = None,
                       only: tuple[str, ...] | None = None):
    """One ``--field-name`` option per field of the dataclass ``cls`` (unless ``metadata["cli"]`` is False;
    with ``only``, just those fields)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get("cli", True) is False or (only is not None and field.name not in only):
            continue
        flag, help_text = "--" + field.name.replace("_", "-"), field.metadata["help"].replace("%", "%%")
        if hints[field.name] is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        field_choices = (choices or {}).get(field.name, field.metadata.get("choices"))
        single_choice = field_choices is not None and typing.get_origin(hints[field.name]) is not tuple
        parse = _parser_for(field, hints[field.name])
        base = _without_none(hints[field.name])
        metavar = None if single_choice else {_parse_widths: "W,W", _parse_names: "A,B", str: "TEXT"}.get(
            parse, "N" if base is int else "X")
        parser.add_argument(flag, type=parse, default=field.default, help=help_text, metavar=metavar,
                            choices=field_choices if single_choice else None)


def config_from_args(cls, args):
    """``cls`` built from the parsed options named after its fields (the others keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    if cls is ModelConfig and values.get("sigma") == "learned":
        values.update(sigma=1.0, learn_sigma=True)
    return cls(**values)


class HelpFormatter(argparse.HelpFormatter):
    """Shows a default only when there is one to show, lists as ``200,200``."""

    def _get_help_string(self, action):
        text, default = action.help or "", action.default
        if "default" in text or default is None or default is False or default == argparse.SUPPRESS \
                or not action.option_strings:
            return text
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"
