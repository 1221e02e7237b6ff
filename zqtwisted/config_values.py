"""Reading TOML values into typed settings: the generic part of :mod:`zqtwisted.config`.

:func:`build_dataclass` builds a frozen dataclass from a table, checking every key
against the dataclass's annotations (environment strings are converted), and the
helpers that settings' ``validate`` methods share.  It knows no section.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


def build_dataclass(cls: type[T], value: Any, path: str) -> T:
    """Build the frozen dataclass ``cls`` from a TOML table, checking names and types."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a table, got {type(value).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        if key not in fields:
            raise ConfigError(f"unknown key {path}.{key} (known: {', '.join(sorted(fields))})")
        kwargs[key] = _coerce(item, hints[key], f"{path}.{key}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``hint`` (environment strings are converted).

    A value type (a class with ``from_config``, such as :class:`ConsumeLimit`) parses
    its own values, ``"none"`` included.
    """
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    value_types = [o for o in options if hasattr(o, "from_config")]
    for option in value_types:
        try:
            return option.from_config(value)
        except (TypeError, ValueError):
            pass
    if value_types:
        options = tuple(value_types)
    elif value == "none" and type(None) in options:
        return None
    for option in options:
        ok, converted = _try_type(value, option)
        if ok:
            return converted
    names = " or ".join(_type_name(o) for o in options)
    shown = "***" if looks_secret(path) else repr(value)
    raise ConfigError(f"{path}: expected {names}, got {shown}")


def _try_type(value: Any, option: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(option)
    if option is type(None):
        return False, None
    if option is bool:
        if isinstance(value, bool):
            return True, value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return True, value.lower() in ("true", "1", "yes")
        return False, None
    if option is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return True, int(value)
        return False, None
    if option is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, None
        return False, None
    if option is str:
        return isinstance(value, str), value
    if origin in (tuple, list):
        (item_type, *_rest) = typing.get_args(option) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            return False, None
        items = []
        for item in value:
            ok, converted = _try_type(item, item_type) if item_type is not Any else (True, item)
            if not ok:
                return False, None
            items.append(converted)
        return True, tuple(items)
    if origin in (dict, Mapping) or option in (dict, Mapping):
        return isinstance(value, Mapping), types.MappingProxyType(dict(value)) if isinstance(value, Mapping) else None
    if option is Any:
        return True, value
    return False, None


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _type_name(option: Any) -> str:
    if option is type(None):
        return '"none"'
    if hasattr(option, "config_description"):
        return str(option.config_description)
    origin = typing.get_origin(option)
    if origin is not None:
        return f"a list of {_type_name(typing.get_args(option)[0])}" if origin in (tuple, list) else "a table"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(option, str(option))


AMQP_SHORT_MAX = 65535  # the largest AMQP short (prefetch count, heartbeat seconds)


def at_most(value: float, limit: float, path: str) -> None:
    positive(value, path)
    if value > limit:
        raise ConfigError(f"{path}: must be at most {limit}, got {value}")


def positive(value: float, path: str, allow_zero: bool = True) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{path}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def looks_secret(path: str) -> bool:
    return any(word in path for word in ("password", "api_key", "token", "secret", "dsn"))


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def read_secret(value: str, file_value: str, path: str) -> str:
    """A secret given inline or, preferably, in a file the config names."""
    if file_value:
        try:
            return Path(file_value).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}_file: cannot read {file_value}: {getattr(e, 'strerror', None) or e}") from None
    return value
