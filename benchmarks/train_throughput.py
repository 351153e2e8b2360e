"""Training throughput and time-to-accuracy of synthgap's default classifier.

Prints (it asserts nothing about time):
  (i)   img/s of pure forward+backward+step of the default net on in-memory float tensors;
  (ii)  img/s of synthgap's full training step (uint8 on device -> normalise -> augment -> step);
  (iii) img/s of a naive torchvision ImageFolder + PIL-transforms DataLoader loop on the same images;
  the ratios (ii)/(i) and (ii)/(iii); the memory of the six-class training set held as uint8;
  with --time-to-accuracy, real->real test accuracy on the six animal classes and the time it took.

Data: the six animal classes of CIFAR-10 under $SYNTHGAP_DATA (e.g. ../shared/data), else random images.

    SYNTHGAP_DATA=../shared/data .venv/bin/python benchmarks/train_throughput.py [--time-to-accuracy]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from synthgap import ANIMALS
from synthgap.config import load_config
from synthgap.data import ImageSet, load_spec
from synthgap.models import build_model
from synthgap.train import evaluate, fit
from synthgap.train.config import TrainConfig


def pure_step_rate(cfg: TrainConfig, steps: int) -> float:
    model = build_model(cfg.model, 6, widths=cfg.widths).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(cfg.batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 6, (cfg.batch_size,))
    for i in range(steps + 3):
        if i == 3:
            t = time.perf_counter()
        loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * cfg.batch_size / (time.perf_counter() - t)


def synthgap_step_rate(train: ImageSet, cfg: TrainConfig, steps: int) -> float:
    cfg = dataclasses.replace(cfg, val_fraction=0.0)
    r = fit(train, cfg, budget_images=steps * cfg.batch_size, progress=False)
    return r.images_per_second


def naive_loader_rate(folder: Path, cfg: TrainConfig, steps: int) -> float:
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=2, padding_mode="reflect"),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        ]
    )
    ds = datasets.ImageFolder(str(folder), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=2, drop_last=True)
    model = build_model(cfg.model, len(ds.classes), widths=cfg.widths).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    done, t = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 3:
            t = time.perf_counter()
        loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:
            done += 1
        if done == steps:
            break
    return done * cfg.batch_size / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="timed training steps per measurement")
    ap.add_argument("--config", default=None, help="training config YAML (default: synthgap's defaults)")
    ap.add_argument("--time-to-accuracy", action="store_true", help="also train real->real on the six classes")
    ap.add_argument("--epochs", type=int, default=30, help="epochs of the time-to-accuracy run (30: about 14 min here)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = load_config(TrainConfig, args.config)

    root = os.environ.get("SYNTHGAP_DATA")
    folder = Path(root) / "cifar10-jpeg" / "train" if root else None
    if folder and folder.is_dir():
        train = load_spec("cifar10", "train", list(ANIMALS), 32, root)
        source = f"CIFAR-10 six animal classes ({folder})"
    else:
        n = 30000
        g = torch.Generator().manual_seed(0)
        train = ImageSet(
            torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
            torch.arange(n) % 6,
            list(ANIMALS),
            "random",
            "real",
        )
        folder = None
        source = "random uint8 images (no $SYNTHGAP_DATA/cifar10-jpeg)"
    print(f"data: {source}; {len(train)} images; {os.cpu_count()} CPU threads; torch {torch.__version__}")
    print(f"model: {cfg.model} widths={cfg.widths or 'default'} batch={cfg.batch_size}")
    mb = train.images.numel() * train.images.element_size() / 2**20
    print(f"six-class training set as uint8: {mb:.1f} MiB (target <= 150 MB)")

    i = pure_step_rate(cfg, args.steps)
    print(f"(i)   pure forward+backward+step:         {i:8.0f} img/s")
    ii = synthgap_step_rate(train, cfg, args.steps)
    print(f"(ii)  synthgap training step (augmented): {ii:8.0f} img/s")
    if folder is None:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name)
        from PIL import Image

        for k, c in enumerate(ANIMALS):
            (folder / c).mkdir()
            for j in range(200):
                Image.fromarray(train.images[k * 200 + j].permute(1, 2, 0).numpy()).save(folder / c / f"{j}.jpg")
    iii = naive_loader_rate(folder, cfg, args.steps)
    print(f"(iii) naive ImageFolder+PIL DataLoader:   {iii:8.0f} img/s")
    print(f"ratio (ii)/(i)   = {ii / i:.2f}  (target >= 0.9)")
    print(f"ratio (ii)/(iii) = {ii / iii:.2f}  (target >= 3)")

    if args.time_to_accuracy:
        if train.name == "random":
            print("time-to-accuracy: skipped (needs $SYNTHGAP_DATA with cifar10-jpeg)")
        else:
            test = load_spec("cifar10", "test", list(ANIMALS), 32, root)
            cfg = dataclasses.replace(cfg, epochs=args.epochs)
            t = time.perf_counter()
            r = fit(train, cfg, progress=True, desc="real->real")
            acc = evaluate(r.model, test, tta=cfg.tta)["accuracy"]
            print(
                f"time-to-accuracy: real->real test accuracy {100 * acc:.2f}% on {len(test)} images after "
                f"{r.seconds / 60:.1f} min of training ({(time.perf_counter() - t) / 60:.1f} min with validation), "
                f"{cfg.epochs} epochs, {r.images_per_second:.0f} img/s"
            )
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
