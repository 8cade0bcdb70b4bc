"""The config engine every stage uses: typed dataclass configs filled from presets, a JSON file and `--set`.

A stage's config is a plain dataclass (`ulmfit.lm.config.LMConfig`, `ulmfit.classify.config.ClassifierConfig`)
and its presets are dicts of the fields they change. Values are resolved in one order, later wins:

    preset  →  --config FILE.json  →  --set key=value (repeatable)  →  explicit options (--epochs, --bs, ...)

Every value, wherever it comes from, is converted by the type the dataclass declares for its field, so a
spelling means the same on every command: booleans take true/false, on/off, yes/no, 1/0; lists take `[1, 2]`
or `1,2`; an optional field takes none/null; numbers take `1e-2`. A field whose type needs more (a classifier
schedule, which may also be a name) declares its own converter as `field(metadata={"coerce": fn})`. An unknown
key is an error that lists the valid ones. Validation stays with each stage (`validate` in its module).

Only the standard library is imported here: the CLI resolves and checks a config before torch is loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ulmfit.errors import UlmfitError

T = TypeVar("T")

TRUE = ("true", "on", "yes", "1")
FALSE = ("false", "off", "no", "0")
NULL = ("none", "null")


def field_names(cls: type) -> list[str]:
    """The config keys of a config dataclass, in declaration order (related keys sit together)."""
    return [f.name for f in dataclasses.fields(cls)]


@functools.cache
def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """name → (field, resolved type); the modules use `from __future__ import annotations`, so types are strings."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


# Keys that were renamed: the error names the new one.
RENAMED = {"bptt": "seq_len"}


def check_keys(cls: type, keys: Iterable[str], where: str) -> None:
    """Every key must be a field of `cls`; the error lists the valid ones."""
    bad = [k for k in keys if k not in _fields(cls)]
    renamed = [k for k in bad if RENAMED.get(k) in _fields(cls)]
    if renamed:
        k = renamed[0]
        raise UlmfitError(f"config key {k!r} in {where} is now called {RENAMED[k]!r}",
                          hint=f"e.g. --set {RENAMED[k]}=72")
    if bad:
        raise UlmfitError(f"unknown config key{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))} in {where}",
                          hint=f"valid keys: {', '.join(field_names(cls))}")


def coerce(cls: type, name: str, value: Any) -> Any:
    """`value` (a JSON value, a `--set` string or a Python value) as field `name`'s type; errors name the key."""
    f, ftype = _fields(cls)[name]
    convert: Callable[[Any], Any] | None = f.metadata.get("coerce")
    try:
        if convert is not None:
            # A structured value given on the command line is JSON: --set schedule='[{"freeze_to": -1, ...}]'
            if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
                value = json.loads(value)
            return convert(value)
        return _to_type(ftype, value)
    except (ValueError, TypeError):
        default = _example(f)
        raise UlmfitError(f"config key {name!r}: cannot use {value!r} (expected {f.type})",
                          hint=None if default is None else f"e.g. --set {name}={default}") from None


def _to_type(tp: Any, value: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # only `X | None` needs no converter of its own
        if value is None or isinstance(value, str) and value.strip().lower() in NULL:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise NotImplementedError(f"{tp}: give the field a metadata converter")
        return _to_type(inner[0], value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):  # JSON 1/0 mean what --set 1/0 mean
            return bool(value)
        low = value.strip().lower() if isinstance(value, str) else None
        if low in TRUE or low in FALSE:
            return low in TRUE
        raise ValueError(value)
    if tp is int:
        if isinstance(value, str):
            s = value.strip()
            value = int(s) if s.lstrip("+-").isdigit() else float(s)  # "1e3" is 1000; "2.5" is refused below
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(value)
        return value
    if tp is float:
        if isinstance(value, str):
            return float(value.strip())
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(value)
        return value.strip()
    if origin in (list, tuple):
        if isinstance(value, str):  # "[0.8, 0.7]" (JSON), "0.8,0.7" or "(0.8, 0.7)"
            s = value.strip()
            value = json.loads(s) if s.startswith("[") else [p for p in s.strip("()").split(",") if p.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(value)
        items = [_to_type(args[0], v) for v in value]  # tuple[float, float, float]: the length is validate's job
        return tuple(items) if origin is tuple else items
    raise NotImplementedError(f"no conversion to {tp}: give the field a metadata converter")


def _example(f: dataclasses.Field) -> str | None:
    """The field's default as a `--set` value, for hints."""
    if f.metadata.get("coerce") is not None:
        return None
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def parse_sets(cls: type, items: Iterable[str] | None) -> dict[str, Any]:
    """`["drop_mult=0.3", "tie_weights=off"]` → {"drop_mult": 0.3, "tie_weights": False}; unknown keys are errors."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UlmfitError(f"--set {item!r} is not key=value", hint="e.g. --set drop_mult=0.3")
        k, v = item.split("=", 1)
        k = k.strip()
        check_keys(cls, [k], "--set")
        out[k] = coerce(cls, k, v)
    return out


def read_config_file(cls: type, path: str | Path) -> dict[str, Any]:
    """A JSON object of config keys (a `--config` file), converted like `--set` values."""
    p = Path(path)
    if not p.exists():
        raise UlmfitError(f"config file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UlmfitError(f"cannot read config file {p}: not valid JSON ({e})",
                          hint="it must be a JSON object of key: value") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UlmfitError(f"cannot read config file {p}: {e}") from None
    if not isinstance(data, dict):
        raise UlmfitError(f"config file {p} must hold a JSON object", hint='e.g. {"drop_mult": 0.3, "epochs": 3}')
    check_keys(cls, data, p.name)
    return {k: coerce(cls, k, v) for k, v in data.items()}


def user_values(cls: type, config_file: str | Path | None = None, sets: Iterable[str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the user set, converted: the config file, then `--set`, then explicit options (None = not given)."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_config_file(cls, config_file))
    values.update(parse_sets(cls, sets))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_keys(cls, given, "options")
    values.update({k: coerce(cls, k, v) for k, v in given.items()})
    return values


def check_preset(presets: Mapping[str, Any], preset: str) -> None:
    if preset not in presets:
        raise UlmfitError(f"unknown preset {preset!r}", hint=f"choose one of: {', '.join(presets)}")


def from_preset(cls: type[T], presets: Mapping[str, Mapping[str, Any]], preset: str,
                values: Mapping[str, Any]) -> T:
    """The preset's values (converted as user values are), then `values` on top; not validated."""
    check_preset(presets, preset)
    merged = {k: coerce(cls, k, v) for k, v in presets[preset].items()}
    merged.update(values)
    return cls(**merged)


def halve_batch(bs: int, min_bs: int, enough: Callable[[int], bool]) -> int:
    """`min_steps`: halve the batch until `enough(bs)` (the run has the optimizer steps it asks for) or until a
    further halving would go below `min_bs`."""
    while not enough(bs) and bs // 2 >= min_bs:
        bs //= 2
    return bs
