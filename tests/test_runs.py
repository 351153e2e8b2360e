"""The run-folder contract (synthgap.runs): one rule for every stage's "may this run resume here?"."""

from __future__ import annotations

import dataclasses

import pytest

from synthgap import SynthgapError
from synthgap.config import dump_yaml
from synthgap.experiments.config import TransferConfig
from synthgap.generate.config import GenerateConfig
from synthgap.runs import RunDir, identity, identity_hash
from synthgap.train.config import TrainConfig


def test_identity_leaves_out_the_fields_that_do_not_change_results():
    cfg = TransferConfig()
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=7, device="cpu"))
    assert "threads" not in identity(cfg)["train"] and "device" not in identity(cfg)["train"]
    assert identity_hash(other) == identity_hash(cfg)
    assert identity_hash(dataclasses.replace(cfg, seeds=[5])) != identity_hash(cfg)
    gen = identity(GenerateConfig())
    assert "per_class" not in gen and "batch_size" not in gen and "seed" in gen and "model" in gen


def test_a_folder_resumes_the_same_run_and_refuses_another_naming_what_differs(tmp_path):
    cfg = TransferConfig(seeds=[0])
    folder = RunDir(tmp_path / "study", "run.json", "a study")
    data = {"real_train": {"sha256": "aa", "path": "/one/place"}}
    assert folder.claim(cfg, data=data, remedy="choose another --out") is False  # nothing there: a fresh run
    folder.write(cfg, data=data)
    assert folder.claim(cfg, data=data, remedy="") is True
    # The same images under another path are the same data; another device or thread count is the same run.
    moved = {"real_train": {"sha256": "aa", "path": "/elsewhere"}}
    threads = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=1, device="cpu"))
    assert folder.claim(threads, data=moved, remedy="") is True
    with pytest.raises(SynthgapError, match=r"config differs in: train\.lr\); choose another --out"):
        folder.claim(dataclasses.replace(cfg, train=TrainConfig(lr=0.01)), data=data, remedy="choose another --out")
    with pytest.raises(SynthgapError, match="data differs: real_train changed since"):
        folder.claim(cfg, data={"real_train": {"sha256": "bb"}}, remedy="")
    assert folder.matches(cfg, data=data) and not folder.matches(dataclasses.replace(cfg, seeds=[1]))


def test_a_plain_config_dump_from_before_identities_is_read_with_its_defaults(tmp_path):
    cfg = TransferConfig(seeds=[0])
    (tmp_path / "config.yaml").write_text(dump_yaml(cfg).replace("dedupe: drop\n", ""))  # a field it predates
    folder = RunDir(tmp_path, "config.yaml", "a study")
    assert folder.claim(cfg, remedy="") is True
    with pytest.raises(SynthgapError, match="differs in: seeds"):
        folder.claim(dataclasses.replace(cfg, seeds=[0, 1]), remedy="")
