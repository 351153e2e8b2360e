"""hf: specs: data sets in the Hugging Face `datasets` format, saved to disk or as parquet by the test itself."""

import numpy as np
import pytest
import torch
from conftest import _draw_image

from synthgap import SynthgapError
from synthgap.data.sets import load_spec

datasets = pytest.importorskip("datasets")

CLASSES = ["bird", "cat", "deer"]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # not ~/.cache


def _rows(n_per_class, seed, names=CLASSES):
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k in range(len(names)):
        for _ in range(n_per_class):
            images.append(_draw_image(k, 24, rng))
            labels.append(k)
    return images, labels


def _class_set(tmp_path, *, splits=("train", "test"), label_names=CLASSES + ["truck"]):
    features = datasets.Features({"img": datasets.Image(), "category": datasets.ClassLabel(names=label_names)})
    parts = {}
    for k, split in enumerate(splits):
        images, labels = _rows(4, k, label_names)
        parts[split] = datasets.Dataset.from_dict({"img": images, "category": labels}, features=features)
    path = tmp_path / "hf-set"
    datasets.DatasetDict(parts).save_to_disk(str(path))
    return path, parts


def test_a_saved_data_set_loads_its_splits_with_the_right_labels_and_pixels(tmp_path):
    path, parts = _class_set(tmp_path)
    s = load_spec(f"hf:{path}?label=category", "test", CLASSES, size=24)
    want = [y for y in parts["test"]["category"] if y < 3]  # 'truck' is not asked for
    assert s.labels.tolist() == want
    first = np.array(parts["test"][0]["img"].convert("RGB"))
    assert torch.equal(s.images[0], torch.from_numpy(first).permute(2, 0, 1))  # PNG inside: exact pixels
    assert s.pixel_hashes is not None and len(set(s.pixel_hashes.tolist())) == len(s)
    # each image is also a file of its original bytes (crops, the format audit and the domain record read files)
    from synthgap.data.images import decode_image

    assert len(s.files) == len(s) and all(f.endswith(".png") for f in s.files)
    assert [decode_image(f, 24, with_hash=True)[1] for f in s.files] == s.pixel_hashes.tolist()
    assert any("truck" in why for _, why in load_spec(f"hf:{path}?label=category", "train", CLASSES, 24).skipped)


def test_a_map_renames_label_values_and_a_single_split_is_held_out(tmp_path):
    images, labels = _rows(5, 0)
    ds = datasets.Dataset.from_dict({"image": images, "label": [["b", "c", "d"][y] for y in labels]})
    ds.to_parquet(str(tmp_path / "set.parquet"))
    spec = f"hf:{tmp_path / 'set.parquet'}?map=b:bird,c:cat,d:deer"
    train, test = (load_spec(spec, split, CLASSES, size=16) for split in ("train", "test"))
    assert len(train) + len(test) == 15 and len(test) == 3  # the core's 20% hold-out, stratified
    assert sorted(test.labels.tolist()) == [0, 1, 2]
    assert not set(train.pixel_hashes.tolist()) & set(test.pixel_hashes.tolist())


def test_the_detector_takes_both_sides_of_one_data_set_from_its_label_column(tmp_path):
    from synthgap.detect.data import load_detector_data

    images, labels = _rows(6, 0, ["a", "b"])
    ds = datasets.Dataset.from_dict({"picture": images, "is_fake": [str(y) for y in labels]})
    datasets.DatasetDict({"train": ds, "test": ds.select(range(0, 12, 3))}).save_to_disk(str(tmp_path / "d"))
    spec = f"hf:{tmp_path / 'd'}?image=picture&label=is_fake&real=0&synthetic=1"
    data = load_detector_data(data=spec, classes=CLASSES, size=16, dedupe="off", progress=False)
    assert len(data.train) + len(data.val) == 12
    assert data.test.labels.tolist().count(0) == 2 and data.test.labels.tolist().count(1) == 2
    assert list(data.sources["real"]) == ["real"] and list(data.sources["synthetic"]) == ["synthetic"]
    with pytest.raises(SynthgapError, match="both sides"):
        load_detector_data(data=f"hf:{tmp_path / 'd'}?label=is_fake&real=0", classes=CLASSES, size=16, dedupe="off")


@pytest.mark.parametrize(
    "query, match",
    [
        ("?image=photo", "no column 'photo'"),
        ("?label=kind", "no column 'kind'"),
        ("?colour=1", "unknown option"),
        ("?map=bird", "VALUE:TARGET"),
    ],
)
def test_bad_options_name_the_column_or_option(tmp_path, query, match):
    path, _ = _class_set(tmp_path)
    with pytest.raises(SynthgapError, match=match):
        load_spec(f"hf:{path}{query}", "train", CLASSES, size=16)


def test_a_hub_name_that_cannot_be_reached_says_how_to_work_offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The libraries read those variables when imported (earlier tests import them): set what they read, or the
    # lookup goes to the network and waits out its retries (23 s here).
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SynthgapError, match="save_to_disk"):
        load_spec("hf:nobody/no-such-set-synthgap", "train", CLASSES, size=16)


def test_synthgap_audit_finds_a_training_twin_in_the_test_split_of_a_saved_set(tmp_path, capsys):
    from test_audit import synthgap

    images, labels = _rows(4, 0)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    train = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    test_images, test_labels = _rows(2, 1)
    test = datasets.Dataset.from_dict(
        {"image": test_images + images[:1], "label": test_labels + labels[:1]}, features=features
    )
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "d"))
    code, out, err = synthgap(
        capsys, "audit", f"hf:{tmp_path / 'd'}", "--classes", "bird,cat,deer", "--out", str(tmp_path / "a")
    )
    assert code == 0, err
    assert "1 of 7 test images" in out


def test_decoding_a_chunk_at_a_time_gives_the_same_images_in_the_same_order(tmp_path):
    from synthgap.data.hub import _decode_rows

    _, parts = _class_set(tmp_path)
    raw = parts["train"].cast_column("img", datasets.Image(decode=False))
    rows = np.array([7, 0, 3, 11, 5, 2, 9], dtype=np.int64)
    names = [str(r) for r in rows]
    whole, chunked = (_decode_rows(raw, "img", rows, names, 24, False, chunk=c) for c in (2048, 3))
    assert torch.equal(whole.images, chunked.images) and whole.kept == chunked.kept == list(range(7))
    assert whole.pixel_hashes.tolist() == chunked.pixel_hashes.tolist()
