"""The detector's input chain: a thumbnail of the whole image, or crops of its own pixels.

`input: resize` squares and resizes every image to `image_size` (the seed study's "everything to 224x224";
32x32 data is the whole image either way). `input: crop` keeps the pixels at the image's own scale, where
generators leave their high-frequency traces: training takes one random `crop_size` window per image
per epoch, validation, test and prediction a fixed grid of `crop_grid` x `crop_grid` windows whose
P(synthetic) are averaged into one, with their spread.

Size, format and compression are cues a detector learns instead of generation traces when the two sides
differ in them (JPEG photos against PNG or WebP AI images). So every training window of both sides is
rescaled by a random factor in `rescale` (cut larger, resized down: the pixel grid and any JPEG block grid
move) and re-encoded as JPEG at a random quality in `jpeg_quality`; in evaluation and use every window is
re-encoded at `normalize_format`. No side is ever seen only as PNG or WebP. An image whose shorter side
is below `crop_size` is upscaled (bicubic) until it is not, and counted in the bundle. Real and synthetic images go through
the same chain, in training and in use.

Photo-sized sets do not fit in memory: their windows are cut by DataLoader worker processes that decode
each file when its batch is due, so memory is bounded by the batch and the workers. A training set whose
native pixels fit in `in_memory_mb` is decoded once and cut in the main process instead. The window
positions are drawn in the main process from the epoch's generator, so both give the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from synthgap import SynthgapError
from synthgap.data.images import RESAMPLE, decode_native, resize_square


@dataclass(frozen=True)
class InputChain:
    """How an image becomes the detector's input; recorded in the bundle's `preprocessing`."""

    input: str = "resize"  # resize | crop
    image_size: int = 32  # resize: the square size
    crop_size: int = 224  # crop: the window side
    crop_grid: int = 3  # crop: a grid x grid of windows at evaluation and prediction
    normalize_format: int | None = None  # JPEG quality every view is re-encoded at in evaluation and use, or None
    rescale: tuple[float, float] | None = None  # crop, training: a window shrunk by a factor in this range
    jpeg_quality: tuple[int, int] | None = None  # crop, training: each window re-encoded at a quality in this range

    @property
    def crop(self) -> bool:
        return self.input == "crop"

    @property
    def views(self) -> int:
        """Model inputs per image at evaluation and prediction."""
        return self.crop_grid**2 if self.crop else 1

    @property
    def size(self) -> int:
        return self.crop_size if self.crop else self.image_size

    @classmethod
    def of(cls, preprocessing: dict) -> InputChain:
        """The chain a bundle's `preprocessing` record describes (bundles before crops: resize)."""
        return cls(
            preprocessing.get("input", "resize"),
            int(preprocessing["image_size"]),
            int(preprocessing.get("crop_size") or 224),
            int(preprocessing.get("crop_grid") or 1),
            preprocessing.get("normalize_format"),
            tuple(preprocessing["train_rescale"]) if preprocessing.get("train_rescale") else None,
            tuple(preprocessing["train_jpeg"]) if preprocessing.get("train_jpeg") else None,
        )

    @property
    def augments(self) -> bool:
        """Whether training windows are rescaled or re-encoded (their keys then carry the draws)."""
        return self.crop and bool(self.rescale or self.jpeg_quality)

    def record(self) -> dict:
        """The training-side chain as the bundle's `preprocessing` records it."""
        return {"train_rescale": list(self.rescale or []) or None, "train_jpeg": list(self.jpeg_quality or []) or None}

    def draws(self, n: int, g: torch.Generator) -> list[tuple[float, ...]]:
        """Per training window (down, across, scale, quality): its position, and with `augments` the
        rescale factor and JPEG quality (0: none), all drawn from g."""
        u = torch.rand(n, 4 if self.augments else 2, generator=g, device=g.device).cpu().double()
        if not self.augments:
            return [tuple(r) for r in u.tolist()]
        lo, hi = self.rescale or (1.0, 1.0)
        qlo, qhi = self.jpeg_quality or (0, 0)
        scale = lo + (hi - lo) * u[:, 2]
        quality = (qlo + (qhi - qlo + 1) * u[:, 3]).floor().clamp(max=qhi) if self.jpeg_quality else u[:, 3] * 0
        return list(zip(u[:, 0].tolist(), u[:, 1].tolist(), scale.tolist(), quality.int().tolist()))

    def native(self, im: Image.Image) -> Image.Image:
        """The image every view is cut from: upscaled when smaller than a window."""
        if self.crop and min(im.size) < self.crop_size:
            scale = self.crop_size / min(im.size)
            im = im.resize(
                (max(self.crop_size, round(im.width * scale)), max(self.crop_size, round(im.height * scale))), RESAMPLE
            )
        return im

    def grid(self, height: int, width: int) -> list[tuple[int, int]]:
        """(top, left) of the evaluation windows: evenly spaced from corner to corner, row-major."""
        c, k = self.crop_size, self.crop_grid
        tops = np.linspace(0, height - c, k).round().astype(int) if k > 1 else [(height - c) // 2]
        lefts = np.linspace(0, width - c, k).round().astype(int) if k > 1 else [(width - c) // 2]
        return [(int(t), int(left)) for t in tops for left in lefts]

    def eval_views(self, im: Image.Image) -> torch.Tensor:
        """V x 3 x S x S uint8: the views of one upright RGB image that evaluation and prediction average.
        (resize: the thumbnail, format-normalised by DetectorBundle.predict as the loaded sets are.)"""
        if not self.crop:
            return _tensor(resize_square(im, self.image_size))[None]
        im, c = self.native(im), self.crop_size  # windows cut from the image itself: no copy of the whole of it
        return self._normalized(
            torch.stack([_tensor(im.crop((left, t, left + c, t + c))) for t, left in self.grid(im.height, im.width)])
        )

    def grid_views(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluation windows of a native 3 x H x W image (InputChain.native), stacked, each re-encoded at
        `normalize_format` (the windows, not the whole image: a 12-megapixel photo's JPEG round trip alone
        would take most of a second)."""
        c = self.crop_size
        return self._normalized(torch.stack([x[:, t : t + c, left : left + c] for t, left in self.grid(*x.shape[-2:])]))

    def _normalized(self, views: torch.Tensor) -> torch.Tensor:
        if self.normalize_format:
            from synthgap.train.robust import jpeg

            views = jpeg(views, self.normalize_format)
        return views

    def window(self, x: torch.Tensor, u: tuple[float, ...]) -> torch.Tensor:
        """The training window of a 3 x H x W image at fractions u = (down, across) of its free range; with
        u = (down, across, scale, quality) (InputChain.draws), a window of crop_size / scale pixels resized
        down to crop_size and re-encoded as JPEG at that quality (0: not re-encoded)."""
        c = self.crop_size
        h, w = x.shape[-2:]
        side = min(h, w, round(c / u[2])) if len(u) > 2 and u[2] < 1 else c
        top, left = min(int(u[0] * (h - side + 1)), h - side), min(int(u[1] * (w - side + 1)), w - side)
        out = x[:, top : top + side, left : left + side]
        if side != c:
            out = _tensor(Image.fromarray(out.permute(1, 2, 0).numpy()).resize((c, c), RESAMPLE))
        if len(u) > 3 and u[3]:
            from synthgap.train.robust import jpeg

            out = jpeg(out[None], int(u[3]))[0]
        return out


def _tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)


def resolve_input(
    requested: str, crop_size: int, files: list[str], sample: int = 200, seed: int = 0
) -> tuple[str, str]:
    """(input, why): `crop` only for photo-sized training files, at least half of a sample of them with a
    shorter side of crop_size or more; thumbnail-sized data (CIFAR-10, CIFAKE) is taken whole."""
    if requested == "resize":
        return "resize", "input: resize (configured)"
    if not files:
        return "resize", "input: crop needs image files; these images did not come from files, so each is taken whole"
    from synthgap.detect.audit import file_metadata

    rng = np.random.default_rng(seed)
    picked = rng.choice(len(files), min(sample, len(files)), replace=False)
    metas = [file_metadata(files[i]) for i in picked]
    sides = np.array([min(m["width"], m["height"]) for m in metas])
    median = int(np.median(sides))
    if median < crop_size:
        return "resize", (
            f"input: crop asked, but the training images are thumbnail-sized (median shorter side "
            f"{median} px < crop_size {crop_size}): each is taken whole"
        )
    small = int((sides < crop_size).sum())
    return "crop", (
        f"input: crop at the images' own scale (median shorter side {median} px); {small} of {len(sides)} "
        f"sampled images smaller than {crop_size} px are upscaled first"
    )


class CropViews(torch.utils.data.Dataset):
    """Views of image files under an InputChain. A key is (i, u_down, u_across): one training window of
    file i; or an int i: its evaluation views (V x 3 x S x S). `images`: the native images, when held in memory."""

    def __init__(self, files: list[str], chain: InputChain, images: list[torch.Tensor] | None = None):
        self.files, self.chain, self.images = files, chain, images

    def __len__(self) -> int:
        return len(self.files)

    def native(self, i: int) -> torch.Tensor:
        if self.images is not None:
            return self.images[i]
        im, why = decode_native(self.files[i])
        if im is None:  # the file was read when the set was loaded: it changed since
            raise SynthgapError(f"{self.files[i]}: {why} (it was readable when the set was loaded)")
        return _tensor(self.chain.native(im))

    def __getitem__(self, key):
        if isinstance(key, tuple):  # (i, *draw): one training window; (i, draw, draw, ...): several, stacked
            x, draws = self.native(int(key[0])), key[1:]
            if draws and isinstance(draws[0], tuple):
                return torch.stack([self.chain.window(x, u) for u in draws])
            return self.chain.window(x, draws)
        return self.chain.grid_views(self.native(key))


class _Keys(torch.utils.data.Sampler):
    """The batches of keys of the current epoch (set by the main process before each epoch)."""

    def __init__(self):
        self.batches: list[list] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _loader(views: CropViews, workers: int, keys: _Keys) -> torch.utils.data.DataLoader:
    # Workers end with each epoch (a fork is cheap): the validation's own workers never run beside them.
    return torch.utils.data.DataLoader(
        views, batch_sampler=keys, num_workers=0 if views.images is not None else workers
    )


class RandomCrops:
    """The training batches of a crop-mode set for train.loop.fit: one random window per image per epoch."""

    def __init__(
        self, files: list[str], chain: InputChain, *, workers: int = 2, in_memory_mb: int = 1024, progress: bool = True
    ):
        images = None
        if files and native_bytes(files) <= in_memory_mb * 2**20:
            images = load_native(files, chain, progress=progress)
        self.views, self.keys = CropViews(files, chain, images), _Keys()
        self.loader = _loader(self.views, workers, self.keys)

    @property
    def in_memory(self) -> bool:
        return self.views.images is not None

    def epoch(self, order: torch.Tensor, batch_size: int, steps: int, g: torch.Generator):
        """uint8 batches B x 3 x S x S of the images order[i * B : (i + 1) * B] for i < steps; the windows'
        positions are drawn from g (before any batch is cut, so workers cannot change the draw)."""
        order = order[: steps * batch_size].cpu()
        u = self.views.chain.draws(len(order), g)
        idx = order.tolist()
        self.keys.batches = [
            [(idx[k], *u[k]) for k in range(s * batch_size, (s + 1) * batch_size)] for s in range(steps)
        ]
        return iter(self.loader)


def native_bytes(files: list[str], sample: int = 200) -> int:
    """Bytes of the files' pixels decoded at their own size, estimated from the headers of a sample."""
    from synthgap.detect.audit import file_metadata

    step = max(1, len(files) // sample)
    metas = [file_metadata(f) for f in files[::step]]
    return int(np.mean([3 * m["width"] * m["height"] for m in metas]) * len(files)) if metas else 0


def load_native(files: list[str], chain: InputChain, progress: bool = True) -> list[torch.Tensor]:
    from concurrent.futures import ThreadPoolExecutor

    from synthgap.io import progress_bar

    views = CropViews(files, chain)
    with ThreadPoolExecutor(2) as pool:
        return list(
            progress_bar(
                pool.map(views.native, range(len(files))),
                total=len(files),
                desc="decoding (native)",
                unit="img",
                enabled=progress and len(files) >= 500,
                leave=False,
            )
        )


def eval_batches(
    files: list[str], chain: InputChain, *, batch_images: int = 8, workers: int = 2, train_seed: int | None = None
):
    """(image indices, their evaluation views stacked: n x V x 3 x S x S) per batch of files, in order.
    train_seed: instead of the grid, V training windows per image (InputChain.draws from this seed), so the
    features stage 1 caches have been through the same rescaling and re-encoding as stage 2's windows."""
    keys = _Keys()
    starts = range(0, len(files), batch_images)
    if train_seed is not None and chain.augments:
        u = chain.draws(len(files) * chain.views, torch.Generator().manual_seed(train_seed))
        v = chain.views
        keys.batches = [
            [(i, *u[i * v : (i + 1) * v]) for i in range(s, min(s + batch_images, len(files)))] for s in starts
        ]
        batches = [[k[0] for k in b] for b in keys.batches]
    else:
        keys.batches = batches = [list(range(s, min(s + batch_images, len(files)))) for s in starts]
    loader = torch.utils.data.DataLoader(
        CropViews(files, chain), batch_sampler=keys, num_workers=min(workers, len(keys.batches))
    )
    yield from zip(batches, loader)


@torch.no_grad()
def predict_views(
    model: torch.nn.Module,
    files: list[str],
    chain: InputChain,
    *,
    prepare=None,
    tta: bool = False,
    device="cpu",
    workers: int = 2,
    progress: bool = False,
    desc: str = "predict",
) -> torch.Tensor:
    """N x V x C class probabilities of every evaluation view of every file (views averaged by the caller)."""
    from synthgap.io import progress_bar
    from synthgap.train.evaluate import predict_proba

    out = []
    batches = eval_batches(files, chain, workers=workers)
    for _, x in progress_bar(
        batches, total=-(-len(files) // 8), desc=desc, unit="batch", enabled=progress, leave=False
    ):
        n, v = x.shape[:2]
        out.append(
            predict_proba(
                model,
                x.flatten(0, 1),
                batch_size=max(8, 256 * 64 * 64 // chain.crop_size**2),
                tta=tta,
                device=device,
                prepare=prepare,
            ).view(n, v, -1)
        )
    return torch.cat(out) if out else torch.empty(0, chain.views, 2)
