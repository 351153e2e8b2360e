"""Data specs, parsed once: the text naming a data source becomes a Spec here and nowhere else.

    [NAME=]SPEC                        NAME labels the source (a detector's sides name their sources)
    cifar10                            CIFAR-10 from the data root
    DIR                                an image folder
    FILE.jsonl                         a manifest
    hf:OWNER/NAME[:SPLIT][?OPTIONS]    a Hugging Face data set (or hf:PATH; synthgap.data.hub)
    ROOT::NAME                         the NAME/ folder in each split of ROOT (a side of a REAL/FAKE root)

KINDS is the one table from kind to loader (a dotted name: this module, which the CLI's help texts read,
imports nothing heavy); the help texts (SPEC_HELP, DATA_HELP), the error for a missing path and the list of
kinds in docs/data.md (`python -m synthgap.data.spec docs/data.md` rewrites it) are made from it.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from synthgap import SynthgapError

HUB_PREFIX = "hf:"
HUB_OPTIONS = ("image", "label", "map", "real", "synthetic")
SIDE_SEPARATOR = "::"
_NAMED = re.compile(r"([\w.+-]+)=(.+)")  # NAME=SPEC; an hf: spec's options (hf:X?real=0) do not match


@dataclass(frozen=True)
class Kind:
    """One kind of spec: how it is written, how help texts and docs name it, and what loads it."""

    name: str
    syntax: str  # how it is written
    phrase: str  # in a sentence: "a .jsonl manifest"
    detail: str  # the help text's note in brackets
    doc: str  # its item in docs/data.md (markdown)
    loader: str  # dotted name of (spec, split, classes, size, root, domain, generator) -> ImageSet: one split
    listed: bool = True  # named in help texts and errors (ROOT::NAME is what --data ROOT makes, seldom typed)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "cifar10",
            "cifar10",
            "'cifar10'",
            "from the data root",
            "`cifar10`, from the data root: `--root`, else `$SYNTHGAP_DATA`, else `~/.cache/synthgap/data`",
            "synthgap.data.sets.cifar10_split",
        ),
        Kind(
            "folder",
            "DIR",
            "an image folder",
            "train/<class>/* and test/<class>/*, or <class>/*",
            "a folder with `train/<class>/*` and `test/<class>/*`, or with only `<class>/*` (a fixed, stratified "
            "20% is held out as test)",
            "synthgap.data.sets.folder_split",
        ),
        Kind(
            "manifest",
            "FILE.jsonl",
            "a .jsonl manifest",
            "one image per line",
            "a `.jsonl` manifest with one image per line: `path` relative to the manifest, `label`, optional "
            "`split`, `source` real|synthetic, `generator`, `prompt`, `seed`, `sha256`",
            "synthgap.data.sets.manifest_split",
        ),
        Kind(
            "hf",
            f"{HUB_PREFIX}OWNER/NAME[:SPLIT][?OPTIONS] or {HUB_PREFIX}PATH[:SPLIT][?OPTIONS]",
            "an hf: data set",
            f"{HUB_PREFIX}OWNER/NAME[:SPLIT] or {HUB_PREFIX}PATH, options after ?: "
            + ", ".join(f"{o}=" for o in HUB_OPTIONS),
            "a data set in the Hugging Face `datasets` format: `hf:OWNER/NAME[:SPLIT]` from the hub, or `hf:PATH` "
            "for one saved with `save_to_disk`, a parquet file or folder, or an image folder (works offline); "
            "options after a `?` ([below](#options-of-an-hf-set))",
            "synthgap.data.sets.hub_split",
        ),
        Kind(
            "side",
            f"ROOT{SIDE_SEPARATOR}NAME",
            "one side of a REAL/FAKE root",
            "the NAME/ folder inside ROOT/train and ROOT/test",
            f"`ROOT{SIDE_SEPARATOR}NAME`: the `NAME/` folder inside `ROOT/train/` and `ROOT/test/` (one side of a "
            "REAL/FAKE root with splits, as `--data ROOT` names it)",
            "synthgap.data.sets.side_split",
            listed=False,
        ),
    )
}


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


_LISTED = [k for k in KINDS.values() if k.listed]
EXPECTED = _listing([k.phrase for k in _LISTED])  # what a spec may name, for errors
SPEC_HELP = "a data spec (docs/data.md): " + _listing([f"{k.phrase} ({k.detail})" for k in _LISTED])  # --help
DATA_HELP = (  # --data: both sides from one source
    "one root with REAL/ and FAKE/ folders (CIFAKE, DeepGuardDB style), at its top or inside train/ and test/; "
    f"or an hf: data set whose labels name both sides ({HUB_PREFIX}NAME?label=COLUMN&real=VALUE&synthetic=VALUE)"
)


def docs_markdown(width: int = 104) -> str:
    """The list of spec kinds and forms in docs/data.md."""
    import textwrap

    items = [f"- {k.doc}{';' if n < len(KINDS) else '.'}" for n, k in enumerate(KINDS.values(), 1)]
    wrap = dict(width=width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
    return "\n".join(
        [
            "A spec is one of:",
            "",
            *(textwrap.fill(item, **wrap) for item in items),
            "",
            "Where a command takes several sources (the detector's sides), `NAME=SPEC` names one.",
        ]
    )


def missing(text: str, expected: str = EXPECTED) -> SynthgapError:
    """The one error for a spec naming a path that is not there."""
    return SynthgapError(f"{text}: no such file or folder (expected {expected})")


@dataclass(frozen=True)
class Spec:
    """A parsed data spec. location: the path (as written), the hub name, or ROOT for ROOT::NAME; options:
    an hf: set's options (and `folder`: NAME for ROOT::NAME), in order; name: NAME of NAME=SPEC; text: the
    spec as written without NAME= (what messages and set names show); split: the SPLIT of hf:X:SPLIT."""

    kind: str
    location: str
    options: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    text: str = ""
    split: str | None = None

    def __str__(self) -> str:
        return self.text

    @property
    def written(self) -> str:
        """The spec as it is written back, with its NAME= (what parse_spec reads into this Spec)."""
        return f"{self.name}={self.text}" if self.name else self.text

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    @property
    def path(self) -> Path:
        return Path(self.location).expanduser()

    @property
    def without_options(self) -> str:
        return self.text.partition("?")[0]

    @property
    def label_map(self) -> dict[str, str]:
        """An hf: set's label values onto targets (map=, real=, synthetic=)."""
        out = {}
        for pair in filter(None, (self.option("map") or "").split(",")):
            value, _, target = pair.partition(":")
            out[value] = target
        for side in ("real", "synthetic"):
            out.update({v: side for v in filter(None, (self.option(side) or "").split(","))})
        return out

    @property
    def targets(self) -> set[str]:
        return set(self.label_map.values())

    @property
    def label(self) -> str:
        """NAME, else a name from the spec itself: its folder's or file's, or the hub set's."""
        if self.name:
            return self.name
        if self.kind == "hf":
            return self.location.rstrip("/").rsplit("/", 1)[-1]
        path = Path(self.text).expanduser()
        return (path.stem if self.kind == "manifest" else path.name) or self.text

    def for_split(self, split: str) -> tuple[Spec, bool]:
        """ROOT::NAME -> (the folder ROOT/split/NAME, True: it is that split already); any other: (self, False)."""
        if self.kind != "side":
            return self, False
        root, name = self.location, self.option("folder")
        folder = Path(root) / split / name
        if not folder.is_dir():
            raise SynthgapError(f"{folder}: missing (the {split} split of {root} needs its own {name}/ folder)")
        return parse_spec(str(folder)), True

    def loader(self):
        """KINDS' loader of this kind: (spec, split, classes, size, root, domain, generator) -> ImageSet."""
        module, _, function = KINDS[self.kind].loader.rpartition(".")
        return getattr(importlib.import_module(module), function)


def is_hub_spec(text: str) -> bool:
    return text.startswith(HUB_PREFIX)


def side_spec(root: str | Path, name: str) -> str:
    """ROOT::NAME written out."""
    return f"{root}{SIDE_SEPARATOR}{name}"


def parse_spec(text: str | Spec, expected: str = EXPECTED) -> Spec:
    """The Spec a text names (a Spec is returned as it is). A path that is not there, a file that is not a
    .jsonl manifest, or an hf: spec with unknown or malformed options is a SynthgapError naming the spec;
    expected: what the caller takes, for the error on a missing path."""
    if isinstance(text, Spec):
        return text
    if not isinstance(text, str) or not text.strip():
        raise SynthgapError(f"{text!r}: an empty data spec (expected {expected})")
    name, body = None, text
    named = _NAMED.match(text)
    if named and not Path(text).exists():
        name, body = named.groups()
    if body.lower() == "cifar10":
        return Spec("cifar10", body, name=name, text=body)
    if is_hub_spec(body):
        return _parse_hub(body, name)
    if SIDE_SEPARATOR in body and not Path(body).exists():
        root, folder = body.split(SIDE_SEPARATOR, 1)
        if not root or not folder:
            raise SynthgapError(f"{body}: expected ROOT{SIDE_SEPARATOR}NAME (a folder and the side's folder name)")
        return Spec("side", root, (("folder", folder),), name, body)
    path = Path(body).expanduser()
    if path.is_file():
        if path.suffix != ".jsonl":
            raise SynthgapError(f"{body}: a file spec must be a .jsonl manifest")
        return Spec("manifest", body, name=name, text=body)
    if path.is_dir():
        return Spec("folder", body, name=name, text=body)
    raise missing(body, expected)


def _parse_hub(text: str, name: str | None) -> Spec:
    body, _, query = text[len(HUB_PREFIX) :].partition("?")
    location, split = body, None
    if ":" in body and not Path(body).exists():
        location, split = body.rsplit(":", 1)
    if not location:
        raise SynthgapError(f"{text}: expected hf:OWNER/NAME or hf:PATH after 'hf:'")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(HUB_OPTIONS))
    if unknown:
        raise SynthgapError(f"{text}: unknown option(s) {', '.join(unknown)}; known: {', '.join(HUB_OPTIONS)}")
    for pair in filter(None, options.get("map", "").split(",")):
        _, sep, target = pair.partition(":")
        if not sep or not target:
            raise SynthgapError(f"{text}: option 'map' expects VALUE:TARGET pairs separated by commas, got {pair!r}")
    return Spec("hf", location, tuple(options.items()), name, text, split or None)


_DOCS_START = "<!-- spec kinds: generated from synthgap.data.spec.KINDS (python -m synthgap.data.spec docs/data.md) -->"
_DOCS_END = "<!-- end of spec kinds -->"


def docs_block(markdown: str) -> str | None:
    """The generated part of a markdown page (between the markers), or None when it has none."""
    start, end = markdown.find(_DOCS_START), markdown.find(_DOCS_END)
    if start < 0 or end < 0:
        return None
    return markdown[start + len(_DOCS_START) : end].strip("\n")


def update_docs(path: str | Path) -> bool:
    """Rewrite the generated list of spec kinds in a markdown page; True when it changed."""
    path = Path(path)
    markdown = path.read_text(encoding="utf-8")
    old = docs_block(markdown)
    if old is None:
        raise SynthgapError(f"{path}: no generated block ({_DOCS_START} ... {_DOCS_END})")
    if old == docs_markdown():
        return False
    start, end = markdown.find(_DOCS_START) + len(_DOCS_START), markdown.find(_DOCS_END)
    path.write_text(markdown[:start] + "\n" + docs_markdown() + "\n" + markdown[end:], encoding="utf-8")
    return True


if __name__ == "__main__":
    import sys

    for page in sys.argv[1:] or ["docs/data.md"]:
        print(f"{page}: {'rewritten' if update_docs(page) else 'up to date'}")
