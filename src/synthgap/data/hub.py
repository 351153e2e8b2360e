"""Data sets in the Hugging Face `datasets` format, named by an ``hf:`` spec.

    hf:OWNER/NAME[:SPLIT][?OPTIONS]     a data set on the hub (downloaded once into the datasets cache)
    hf:PATH[:SPLIT][?OPTIONS]           one saved with `save_to_disk`, a parquet file or folder, or an image folder

OPTIONS, joined by '&' (each spec carries its own, so two sets with different columns mix in one run):
    image=COLUMN         the image column (default: the first column of the `Image` type)
    label=COLUMN         the label column (default: `label`); label=none: no labels, every row is taken
    map=VALUE:TARGET,... label values onto class names (or onto real / synthetic for a detector side)
    real=VALUE,...       shorthand for map=VALUE:real,...; synthetic=VALUE,... likewise

Label values are compared as text; a `ClassLabel` column gives its names (and its integers) as values.
Rows whose target is not asked for are left out and counted. Splits: SPLIT, or else the set's `train` and
`test` (its `validation` when it has no `test`); a single split is divided by the core's fixed hold-out.
The images go through the same decoder as files (same resampler, same checks, same native pixel hash)
and are cached by the data set's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synthgap import SynthgapError
from synthgap.data.images import CACHE_VERSION, RESAMPLE, cache_dir, decode_many, read_decoded, write_decoded
from synthgap.data.spec import Spec, parse_spec


@dataclass(frozen=True)
class HubSpec:
    name: str  # a hub id or a local path
    split: str | None = None
    image_column: str | None = None
    label_column: str = "label"
    label_map: dict[str, str] = field(default_factory=dict)

    @property
    def targets(self) -> set[str]:
        return set(self.label_map.values())


def parse_hub_spec(spec: str | Spec) -> HubSpec:
    """The HubSpec of an hf: spec (synthgap.data.spec.parse_spec reads and checks its text)."""
    spec = parse_spec(spec)
    if spec.kind != "hf":
        raise SynthgapError(f"{spec}: not an hf: data set (expected hf:OWNER/NAME or hf:PATH)")
    return HubSpec(
        spec.location, spec.split, spec.option("image") or None, spec.option("label") or "label", spec.label_map
    )


def _open(hs: HubSpec, spec: str):
    """The DatasetDict (or Dataset) a spec names, loaded offline when it is a local path."""
    try:
        import datasets
    except ImportError:
        raise SynthgapError(f"{spec}: hf: specs need the `datasets` package (pip install datasets)") from None
    path = Path(hs.name).expanduser()
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            return datasets.load_from_disk(str(path))
        if path.suffix == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet"))):
            files = str(path) if path.is_file() else sorted(str(p) for p in path.rglob("*.parquet"))
            return datasets.load_dataset("parquet", data_files=files)
        if path.is_dir():
            return datasets.load_dataset("imagefolder", data_dir=str(path))
        if path.exists():
            raise SynthgapError(f"{spec}: {path} is neither a saved data set, parquet, nor an image folder")
        return datasets.load_dataset(hs.name)
    except SynthgapError:
        raise
    except Exception as e:  # no network, a private or misspelt name, a damaged copy: say which and the fix
        raise SynthgapError(
            f"{spec}: cannot load {hs.name!r} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "A hub name needs network access (or the datasets cache, with HF_DATASETS_OFFLINE=1); offline, save "
            "the set with `save_to_disk` and give hf:PATH"
        ) from None


def _split_of(data, hs: HubSpec, split: str, spec: str):
    """(the datasets split to read, whether it still needs the core's hold-out)."""
    import datasets

    if isinstance(data, datasets.Dataset):
        if hs.split:
            raise SynthgapError(f"{spec}: a single data set has no split {hs.split!r}")
        return data, True
    names = list(data.keys())
    if hs.split:
        if hs.split not in data:
            raise SynthgapError(f"{spec}: no split {hs.split!r}; it has {', '.join(names)}")
        return data[hs.split], True
    test = "test" if "test" in data else "validation" if "validation" in data else None
    if "train" in data and test:
        return data["train" if split == "train" else test], False
    if len(names) == 1:
        return data[names[0]], True
    raise SynthgapError(f"{spec}: splits {', '.join(names)}; name the one to use as hf:{hs.name}:SPLIT")


def _label_values(ds, hs: HubSpec, spec: str) -> list[str] | None:
    """Every row's label as text (a ClassLabel's name), or None when the set has no label column."""
    import datasets

    if hs.label_column == "none":
        return None
    if hs.label_column not in ds.column_names:
        if hs.label_column != "label" or hs.label_map:
            raise SynthgapError(f"{spec}: no column {hs.label_column!r}; it has {', '.join(ds.column_names)}")
        return None
    feature = ds.features[hs.label_column]
    values = ds[hs.label_column]
    if isinstance(feature, datasets.ClassLabel):
        return [feature.int2str(int(v)) for v in values]
    return [str(v) for v in values]


def _image_column(ds, hs: HubSpec, spec: str) -> str:
    import datasets

    if hs.image_column:
        if hs.image_column not in ds.column_names:
            raise SynthgapError(f"{spec}: no column {hs.image_column!r}; it has {', '.join(ds.column_names)}")
        return hs.image_column
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise SynthgapError(
        f"{spec}: no column of the Image type among {', '.join(ds.column_names)}; name it with ?image=COLUMN"
    )


def _target(value: str, hs: HubSpec, feature) -> str:
    if value in hs.label_map:
        return hs.label_map[value]
    if feature is not None and hasattr(feature, "str2int"):  # a map may name a ClassLabel by its integer
        return hs.label_map.get(str(feature.str2int(value)), value)
    return value


def load_hub(spec: str | Spec, split: str, targets: list[str], size: int = 32, *, progress: bool = True):
    """Images of one split whose (mapped) label is among `targets`, labelled by their index in it.

    targets: class names, or one of real / synthetic for a detector side. A set without a label column
    has every row count as each target (one unlabelled side). Returns (Decoded, labels, files, needs_holdout,
    left_out): the decoded images, their label indices, the file per kept image (its original bytes, see
    _as_files), whether the core's hold-out must still split them, and the label values left out."""
    import datasets

    spec = parse_spec(spec)
    hs = parse_hub_spec(spec)
    ds, needs_holdout = _split_of(_open(hs, spec), hs, split, spec)
    column = _image_column(ds, hs, spec)
    values = _label_values(ds, hs, spec)
    feature = ds.features.get(hs.label_column) if values is not None else None
    if values is None:
        rows, labels, left_out = np.arange(len(ds)), [0] * len(ds), []
    else:
        mapped = [_target(v, hs, feature) for v in values]
        rows = np.array([i for i, t in enumerate(mapped) if t in targets], dtype=np.int64)
        labels = [targets.index(mapped[i]) for i in rows]
        left_out = sorted({v for v, t in zip(values, mapped) if t not in targets})
    raw = ds.cast_column(column, datasets.Image(decode=False)).select_columns([column])
    key = hashlib.sha256(
        json.dumps(
            {
                "v": CACHE_VERSION,
                "fingerprint": ds._fingerprint,
                "size": size,
                "resample": RESAMPLE.name,
                "column": column,
                "rows": hashlib.sha256(rows.tobytes()).hexdigest(),
            }
        ).encode()
    ).hexdigest()
    cache_file = cache_dir() / "decoded" / f"hf-{key}.pt"
    decoded = read_decoded(cache_file)
    names = [f"{spec.without_options}[{split}][{i}]" for i in rows.tolist()]
    if decoded is None:
        decoded = _decode_rows(raw, column, rows, names, size, progress)
        write_decoded(cache_file, decoded)
    kept_labels = torch.tensor([labels[i] for i in decoded.kept], dtype=torch.long)
    kept_rows = rows[decoded.kept]
    files_key = hashlib.sha256(
        json.dumps(
            {"fingerprint": ds._fingerprint, "column": column, "rows": hashlib.sha256(kept_rows.tobytes()).hexdigest()}
        ).encode()
    )
    files = _as_files(raw, column, kept_rows, cache_dir() / "hub-files" / files_key.hexdigest()[:32], progress)
    return decoded, kept_labels, files, needs_holdout, left_out


def _as_files(raw, column: str, rows: np.ndarray, folder: Path, progress: bool, chunk: int = 2048) -> list[str]:
    """The images of `rows` as files holding their original bytes (written once, into the cache), so
    that every step that reads files reads them as it reads any folder's: windows at their own scale,
    the format audit, the domain record of formats, sizes and JPEG qualities."""
    import io

    from PIL import Image

    from synthgap.io import progress_bar, write_bytes

    index = folder / "files.json"
    if index.exists():
        return json.loads(index.read_text())
    files = []
    for start in progress_bar(
        range(0, len(rows), chunk), desc="files", unit="chunk", enabled=progress and len(rows) > chunk
    ):
        for row, cell in zip(rows[start : start + chunk].tolist(), raw.select(rows[start : start + chunk])[column]):
            if not cell.get("bytes") and cell.get("path") and Path(cell["path"]).is_file():
                files.append(str(Path(cell["path"]).resolve()))  # an image folder's own file
                continue
            with Image.open(io.BytesIO(cell["bytes"])) as im:  # the header only: the format names the suffix
                suffix = {"JPEG": "jpg"}.get(im.format, (im.format or "img").lower())
            files.append(str(folder / f"{row}.{suffix}"))
            write_bytes(files[-1], cell["bytes"])
    write_bytes(index, json.dumps(files).encode())  # last: the folder is complete
    return files


def _decode_rows(raw, column: str, rows: np.ndarray, names: list[str], size: int, progress: bool, chunk: int = 2048):
    """Decode the encoded images of `rows` a chunk at a time: only one chunk's bytes are ever in memory."""
    from synthgap.data.images import Decoded
    from synthgap.io import progress_bar

    images, kept, skipped, hashes = [], [], [], []
    for start in progress_bar(
        range(0, len(rows), chunk), desc="decoding", unit="chunk", enabled=progress and len(rows) > chunk
    ):
        cells = raw.select(rows[start : start + chunk])[column]
        part = decode_many(
            [c.get("bytes") or c.get("path") or b"" for c in cells], names[start : start + chunk], size, progress=False
        )
        images.append(part.images)
        kept += [start + i for i in part.kept]
        skipped += part.skipped
        hashes.append(part.pixel_hashes)
    if not images:
        return Decoded(torch.empty(0, 3, size, size, dtype=torch.uint8), [], [], np.zeros(0, dtype=np.uint64))
    return Decoded(torch.cat(images), kept, skipped, np.concatenate(hashes))
