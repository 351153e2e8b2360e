"""Data specs, parsed once (synthgap.data.spec): every kind and written form, the errors for bad specs,
the one table of kinds the loaders, the CLI's help texts and docs/data.md are made from."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from synthgap import SynthgapError
from synthgap.data.spec import (
    DATA_HELP,
    EXPECTED,
    KINDS,
    SPEC_HELP,
    Spec,
    docs_block,
    docs_markdown,
    parse_spec,
    side_spec,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "data.md"


@pytest.fixture
def places(tmp_path):
    """A class folder, a manifest, a REAL/FAKE root with splits, and a plain file."""
    (tmp_path / "set" / "cat").mkdir(parents=True)
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "x.png", "label": "cat"}) + "\n")
    for split in ("train", "test"):
        for side in ("REAL", "FAKE"):
            (tmp_path / "root" / split / side).mkdir(parents=True)
    (tmp_path / "list.txt").write_text("x")
    return tmp_path


def test_each_kind_is_parsed_into_kind_location_options_and_name(places):
    assert parse_spec("cifar10") == Spec("cifar10", "cifar10", text="cifar10")
    assert parse_spec("CIFAR10").kind == "cifar10"
    folder = parse_spec(str(places / "set"))
    assert (folder.kind, folder.location, folder.options, folder.name) == ("folder", str(places / "set"), (), None)
    assert folder.path == places / "set" and folder.label == "set"
    manifest = parse_spec(str(places / "m.jsonl"))
    assert manifest.kind == "manifest" and manifest.label == "m"
    side = parse_spec(f"{places / 'root'}::REAL")
    assert (side.kind, side.location, side.option("folder")) == ("side", str(places / "root"), "REAL")
    assert side.text == side_spec(places / "root", "REAL")


def test_hf_specs_carry_their_name_split_and_options():
    hub = parse_spec("hf:owner/set")
    assert (hub.kind, hub.location, hub.split, hub.options, hub.label) == ("hf", "owner/set", None, (), "set")
    full = parse_spec("hf:owner/set:validation?image=img&label=kind&map=0:cat,1:dog")
    assert (full.location, full.split) == ("owner/set", "validation")
    assert full.option("image") == "img" and full.option("label") == "kind"
    assert full.label_map == {"0": "cat", "1": "dog"} and full.without_options == "hf:owner/set:validation"
    sides = parse_spec("hf:owner/set?label=is_fake&real=0,2&synthetic=1")
    assert sides.label_map == {"0": "real", "2": "real", "1": "synthetic"}
    assert sides.targets == {"real", "synthetic"}


def test_hf_path_with_a_colon_is_a_path_when_it_exists(tmp_path):
    saved = tmp_path / "a:b"
    saved.mkdir()
    spec = parse_spec(f"hf:{saved}")
    assert spec.location == str(saved) and spec.split is None


def test_name_equals_spec_names_any_kind_and_is_written_back(places):
    for body in ("cifar10", str(places / "set"), str(places / "m.jsonl"), "hf:o/s?real=0", f"{places / 'root'}::FAKE"):
        spec = parse_spec(f"gen-1.5={body}")
        assert spec.name == spec.label == "gen-1.5" and spec.text == body and str(spec) == body
        assert spec.written == f"gen-1.5={body}" and parse_spec(spec.written) == spec
        assert parse_spec(dataclasses.replace(spec, name=None).written).name is None
    assert parse_spec("hf:o/s?real=0").name is None  # an hf: spec's options are not NAME=


def test_an_existing_path_is_taken_as_written_even_with_equals_or_double_colon(tmp_path):
    odd = tmp_path / "a=b"
    odd.mkdir()
    assert parse_spec(str(odd)) == Spec("folder", str(odd), text=str(odd))
    colons = tmp_path / "x::y"
    colons.mkdir()
    assert parse_spec(str(colons)).kind == "folder"


def test_a_spec_is_parsed_once_a_parsed_one_comes_back_as_it_is(places):
    spec = parse_spec(str(places / "set"))
    assert parse_spec(spec) is spec


def test_root_side_resolves_per_split_and_says_which_folder_is_missing(places):
    spec = parse_spec(side_spec(places / "root", "REAL"))
    folder, given = spec.for_split("test")
    assert folder.kind == "folder" and folder.path == places / "root" / "test" / "REAL" and given
    assert parse_spec("cifar10").for_split("train") == (parse_spec("cifar10"), False)
    with pytest.raises(SynthgapError, match=r"missing \(the train split of .* needs its own AI/ folder\)"):
        parse_spec(side_spec(places / "root", "AI")).for_split("train")


@pytest.mark.parametrize(
    "text, match",
    [
        ("{tmp}/no/such", r"{tmp}/no/such: no such file or folder \(expected 'cifar10', an image folder"),
        ("name={tmp}/gone", r"{tmp}/gone: no such file or folder \(expected"),
        ("{tmp}/list.txt", r"{tmp}/list.txt: a file spec must be a .jsonl manifest"),
        ("hf:", r"hf:: expected hf:OWNER/NAME or hf:PATH"),
        ("hf:o/s?colour=1", r"hf:o/s\?colour=1: unknown option\(s\) colour; known: image, label, map"),
        ("hf:o/s?map=bird", r"hf:o/s\?map=bird: option 'map' expects VALUE:TARGET pairs"),
        ("::REAL", r"::REAL: expected ROOT::NAME"),
        ("", r"'': an empty data spec \(expected 'cifar10'"),
    ],
)
def test_bad_specs_are_one_clear_error_naming_the_spec_and_what_was_expected(places, text, match):
    with pytest.raises(SynthgapError, match=match.format(tmp=places)):
        parse_spec(text.format(tmp=places))


def test_a_missing_path_is_worded_the_same_by_every_loader(tmp_path):
    """The core loader, a detector side and the audit: one wording, naming the spec and the kinds."""
    from synthgap.audit import load_parts
    from synthgap.data.sets import load_spec
    from synthgap.data.sides import load_side

    missing = str(tmp_path / "nope")
    messages = set()
    for load in (
        lambda: load_spec(missing, "train", ["cat"]),
        lambda: load_side(missing, "train", 0, classes=["cat"], size=16),
        lambda: load_parts(missing, classes=["cat"], size=16),
    ):
        with pytest.raises(SynthgapError) as e:
            load()
        messages.add(str(e.value))
    assert messages == {f"{missing}: no such file or folder (expected {EXPECTED})"}


def test_every_kind_has_a_loader_of_one_split():
    import inspect

    for kind in KINDS.values():
        loader = Spec(kind.name, "x").loader()
        assert list(inspect.signature(loader).parameters) == [
            "spec",
            "split",
            "classes",
            "size",
            "root",
            "domain",
            "generator",
        ], kind.name


def test_a_root_side_loads_through_the_core_loader_as_that_splits_class_folders(tmp_path):
    from conftest import make_image_folder

    from synthgap.data.sets import load_spec

    for split in ("train", "test"):
        make_image_folder(tmp_path / "root" / split / "REAL", ["cat", "dog"], 2, size=16, splits=())
    s = load_spec(side_spec(tmp_path / "root", "REAL"), "test", ["cat", "dog"], size=16)
    assert len(s) == 4 and s.name == str(tmp_path / "root" / "test" / "REAL")


def _options(group: click.Group):
    for command in group.commands.values():
        if isinstance(command, click.Group):
            yield from _options(command)
        else:
            yield command, None
            yield from ((command, p) for p in command.params if isinstance(p, click.Option))


def test_every_help_that_lists_the_kinds_is_the_generated_one():
    from synthgap.cli import cli

    listing, data = [], []
    for command, option in _options(cli):
        text = " ".join((command.help if option is None else option.help or "").split())
        if "a .jsonl manifest" in text or "hf: data set" in text:
            assert SPEC_HELP in text or DATA_HELP in text, (command.name, option and option.name, text)
            (listing if SPEC_HELP in text else data).append(command.name)
    assert len(listing) >= 7 and len(data) >= 2  # train, transfer x2, generator, audit, detector..., autoencoder


def test_the_help_texts_import_nothing_heavy():
    code = "import sys, synthgap.cli; sys.exit(sorted({'torch', 'numpy'} & set(sys.modules)) != [])"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_docs_list_of_kinds_is_the_generated_one():
    block = docs_block(DOCS.read_text(encoding="utf-8"))
    assert block == docs_markdown(), "docs/data.md is out of date: run python -m synthgap.data.spec docs/data.md"
    for kind in KINDS.values():
        assert kind.doc.split()[0] in block
