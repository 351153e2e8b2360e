"""The detector's input chain: a thumbnail of the whole image, or crops of its own pixels.

`input: resize` squares and resizes every image to `image_size` (the seed study's "everything to 224x224";
32x32 data is the whole image either way). `input: crop` keeps the pixels at the image's own scale, where
generators leave their high-frequency traces: training takes one random `crop_size` window per image
per epoch, validation, test and prediction a fixed grid of `crop_grid` x `crop_grid` windows whose
P(synthetic) are averaged into one, with their spread. An image whose shorter side is below `crop_size`
is upscaled (bicubic) until it is not, and counted in the bundle. Real and synthetic images go through
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
    normalize_format: int | None = None  # JPEG quality every image is re-encoded at first, or None

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
        )

    def native(self, im: Image.Image) -> Image.Image:
        """The image every view is cut from: format-normalised, and upscaled when smaller than a window."""
        if self.normalize_format:
            from synthgap.train.robust import jpeg

            x = torch.from_numpy(np.asarray(im, dtype=np.uint8)).permute(2, 0, 1)
            im = Image.fromarray(jpeg(x[None], self.normalize_format)[0].permute(1, 2, 0).numpy())
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
        return self.grid_views(_tensor(self.native(im)))

    def grid_views(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluation windows of a native 3 x H x W image (InputChain.native), stacked."""
        c = self.crop_size
        return torch.stack([x[:, t : t + c, left : left + c] for t, left in self.grid(*x.shape[-2:])])

    def window(self, x: torch.Tensor, u: tuple[float, float]) -> torch.Tensor:
        """The training window of a 3 x H x W image at fractions u = (down, across) of its free range."""
        c = self.crop_size
        h, w = x.shape[-2:]
        top, left = min(int(u[0] * (h - c + 1)), h - c), min(int(u[1] * (w - c + 1)), w - c)
        return x[:, top : top + c, left : left + c]


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
        if isinstance(key, tuple):
            return self.chain.window(self.native(int(key[0])), (key[1], key[2]))
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
        u = torch.rand(len(order), 2, generator=g, device=g.device).cpu().double().tolist()
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


def eval_batches(files: list[str], chain: InputChain, *, batch_images: int = 8, workers: int = 2):
    """(image indices, their evaluation views stacked: n x V x 3 x S x S) per batch of files, in order."""
    keys = _Keys()
    keys.batches = [list(range(i, min(i + batch_images, len(files)))) for i in range(0, len(files), batch_images)]
    loader = torch.utils.data.DataLoader(
        CropViews(files, chain), batch_sampler=keys, num_workers=min(workers, len(keys.batches))
    )
    yield from zip(keys.batches, loader)


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
