"""The config loader: YAML files and ``key.sub=value`` overrides map onto the config dataclasses that each
stage keeps beside its code (synthgap.train.config, generate.config, detect.config, experiments.config,
serve.config); unknown keys or wrong types are clear errors naming the field."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from synthgap import SynthgapError


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise SynthgapError(f"config field '{where}': expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for tp_ in inner[:-1]:  # e.g. int | str: 10 stays a number, "all" a word
            try:
                return _convert(value, tp_, where)
            except SynthgapError:
                pass
        return _convert(value, inner[-1], where)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise SynthgapError(f"config field '{where}': expected a list, got {value!r}")
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if isinstance(value, bool):
            return value
        raise SynthgapError(f"config field '{where}': expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise SynthgapError(f"config field '{where}': expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise SynthgapError(f"config field '{where}': expected {tp.__name__}, got {value!r}") from None
        if tp is int and float(value) != out:
            raise SynthgapError(f"config field '{where}': expected a whole number, got {value!r}")
        return out
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise SynthgapError(f"config field '{where}': expected text, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise SynthgapError(
            f"unknown config field(s) {', '.join(prefix + u for u in unknown)}; known: {', '.join(sorted(names))}"
        )
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict:
    """``train.epochs=5`` -> {"train": {"epochs": 5}} (the value is parsed as YAML)."""
    if "=" not in text:
        raise SynthgapError(f"override '{text}': expected KEY=VALUE, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise SynthgapError(
            f"override '{text}': the value is not valid YAML ({e.problem if hasattr(e, 'problem') else e}); "
            "quote it, e.g. KEY='\"a: b\"'"
        ) from None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(
    cls: type,
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    presets: list[dict] | tuple[dict, ...] = (),
    flags: dict | None = None,
) -> Any:
    """Defaults <- presets <- YAML file <- overrides <- flags (CLI options, taken as they are), validated into `cls`."""
    # Start from the full defaults, so a partial nested section (e.g. `head: {epochs: 6}`) keeps
    # its parent's defaults for that section rather than the nested class's own.
    data: dict = to_dict(cls())
    for p in presets:
        data = merge(data, p)
    data = merge(data, written_fields(path, overrides))
    data = merge(data, {k: v for k, v in (flags or {}).items() if v is not None})
    return from_dict(cls, data)


def written_fields(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """What a user wrote: the YAML file's fields and the overrides on top, without any default."""
    data: dict = {}
    if path:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise SynthgapError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise SynthgapError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise SynthgapError(f"{path}: expected a mapping of config fields at the top level")
        data = merge(data, loaded)
    for o in overrides:
        data = merge(data, parse_override(o))
    return data


def to_dict(cfg: Any) -> dict:
    return asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
