"""The run-folder contract: one rule for "is this the same run, may it resume here?".

Every stage that writes a folder (a transfer study, a generated set, a generator or detector
training, an Optuna study) and every checkpoint records the config it was made with, the hash of
its identity and of its data, and the environment. A later run in the same place resumes only if
its identity and its data are the same; otherwise it is refused with the fields that differ.

The identity of a config is every field that changes results. Fields that do not (the device, CPU
threads, batch sizes of inference, how many images to make) are declared on the config dataclasses
with `field(metadata=RUNTIME)`: a run may resume with other values of those.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from synthgap import SynthgapError

RUNTIME = {"runtime": True}  # field metadata: the field does not change results


def identity(cfg: Any) -> dict:
    """The fields of a config dataclass that change results, nested dataclasses included."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("runtime"):
            continue
        value = getattr(cfg, f.name)
        out[f.name] = identity(value) if dataclasses.is_dataclass(value) else json.loads(json.dumps(value))
    return out


def identity_hash(cfg: Any) -> str:
    """16 hex digits naming a config's identity (a config dataclass, or an identity dict)."""
    import hashlib

    ident = cfg if isinstance(cfg, dict) else identity(cfg)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def recorded_identity(cls: type, config: dict) -> dict:
    """The identity of a config as a record holds it (a dict): fields a record lacks (made before they
    existed) take their defaults, so an old folder resumes under a newer synthgap."""
    from synthgap.config import from_dict, merge, to_dict

    known = {f.name for f in dataclasses.fields(cls)}
    return identity(from_dict(cls, merge(to_dict(cls()), {k: v for k, v in config.items() if k in known})))


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted names of the fields where two nested dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d
            for k in sorted(set(old) | set(new), key=str)
            for d in differences(old.get(k), new.get(k), f"{prefix}{k}.")
        ]
    return [] if old == new else [prefix.rstrip(".")]


def check_resume(where: str | Path, what: str, old: dict | None, new: dict, remedy: str) -> bool:
    """The one rule: nothing recorded -> a fresh run (False); the same identity and data -> resume (True);
    otherwise a SynthgapError naming what differs and `remedy`. `old`/`new`: {"identity": ..., "data": ...}."""
    if old is None:
        return False
    diff = differences(old.get("identity"), new.get("identity"))
    before = {k: _data_hash(v) for k, v in (old.get("data") or {}).items()}
    data = [k for k, v in (new.get("data") or {}).items() if k in before and before[k] != _data_hash(v)]
    if diff or data:
        parts = ([f"config differs in: {', '.join(diff)}"] if diff else []) + (
            [f"data differs: {', '.join(data)} changed since"] if data else []
        )
        raise SynthgapError(
            f"{where} holds {what} made with a different config or started on other data ({'; '.join(parts)}); {remedy}"
        )
    return True


def _data_hash(entry: Any) -> Any:
    """A data record's hash: its `sha256` (the same images under another path are the same data)."""
    return entry.get("sha256") if isinstance(entry, dict) else entry


class RunDir:
    """A folder claimed by one run: `record` (YAML or JSON by its suffix) holds the config, its identity
    and hash, the data hashes and the environment; `claim` applies `check_resume` to it."""

    def __init__(self, path: str | Path, record: str, what: str, data_record: str | None = None):
        self.path, self.what = Path(path), what
        self.record = self.path / record
        self.data_record = self.path / data_record if data_record else None  # where "data" is, if not in record

    @staticmethod
    def _load(path: Path) -> dict | None:
        if not path.exists():
            return None
        text = path.read_text()
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)

    def read(self) -> dict | None:
        record = self._load(self.record)
        if record is not None and self.data_record:
            record = {**record, "data": (self._load(self.data_record) or {}).get("data", {})}
        return record

    def claim(
        self,
        cfg: Any,
        *,
        data: dict | None = None,
        remedy: str,
        extra_identity: dict | None = None,
        ident: dict | None = None,
    ) -> bool:
        """True if the folder holds this very run (resume), False if it holds none; refuses another.
        `ident`: the stage's own identity when it is not identity(cfg) + extra_identity."""
        old = self.read()
        if old is not None and "identity" not in old:  # a plain config dump, or a record made before identities
            config = old.get("config", {k: v for k, v in old.items() if k != "data"})
            old = {**old, "identity": recorded_identity(type(cfg), config)}
        new = {"identity": ident or {**identity(cfg), **(extra_identity or {})}, "data": data or {}}
        return check_resume(self.path, self.what, old, new, remedy)

    def matches(self, cfg: Any, *, data: dict | None = None, ident: dict | None = None) -> bool:
        """Whether the folder holds this very run (for a stage that reads a finished one back)."""
        try:
            return self.claim(cfg, data=data, ident=ident, remedy="")
        except SynthgapError:
            return False

    def holds(self, ident: dict) -> bool:
        """Whether the folder's record has this identity (for a stage that picks a free sibling folder)."""
        return (self.read() or {}).get("identity") == ident

    def write(
        self,
        cfg: Any,
        *,
        data: dict | None = None,
        extra_identity: dict | None = None,
        ident: dict | None = None,
        **extra: Any,
    ) -> None:
        """Record the run atomically: config, identity, identity hash, data, environment, and `extra`."""
        from synthgap.config import to_dict
        from synthgap.io import environment, write_json, write_text

        ident = ident or {**identity(cfg), **(extra_identity or {})}
        env = extra.pop("environment", None) or environment()
        record = {
            "config": to_dict(cfg),
            "identity": ident,
            "config_hash": identity_hash(ident),
            "data": data or {},
            **extra,
            "environment": env,
        }
        self.path.mkdir(parents=True, exist_ok=True)
        if self.record.suffix == ".json":
            write_json(self.record, record)
        else:
            write_text(self.record, yaml.safe_dump(record, sort_keys=False))
