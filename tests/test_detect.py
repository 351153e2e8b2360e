"""The detector: backbones, freezing, two-stage training, evaluation, robustness, bias audit,
Optuna resume, the bundle, and the `synthgap detector` / `synthgap detect` commands.

Data: small images the tests draw. "Synthetic" images carry a faint periodic grid that "real"
ones lack: a learnable difference, like a generator's upsampling artefacts.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder, synthgap
from PIL import Image
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from synthgap import SynthgapError
from synthgap.detect.config import DetectorConfig
from synthgap.detect.data import load_detector_data
from synthgap.detect.evaluate import binary_metrics, choose_threshold
from synthgap.detect.model import DetectorBundle, build_detector, load_bundle
from synthgap.detect.train import check_detector_config, evaluate_detector, run_detector, train_detector
from synthgap.models.registry import BACKBONES
from synthgap.train import robust
from synthgap.train.config import AugmentConfig
from synthgap.train.loop import fit

CLASSES = ["bird", "cat", "frog"]


def _add_grid(folder: Path, fmt: str = "JPEG") -> None:
    """Stamp a faint grid (every 4th row and column brighter) into every image, saved as `fmt`."""
    for p in sorted(folder.rglob("*.png")):
        a = np.asarray(Image.open(p).convert("RGB")).astype(np.int16)
        a[::4, :, :] += 60
        a[:, ::4, :] += 60
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        p.unlink()
        im.save(p.with_suffix(".jpg" if fmt == "JPEG" else ".png"), fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def _to_jpeg(folder: Path) -> None:
    for p in sorted(folder.rglob("*.png")):
        Image.open(p).convert("RGB").save(p.with_suffix(".jpg"), "JPEG", quality=90)
        p.unlink()


def make_pair(root: Path, n: int = 24, size: int = 32, synthetic_format: str = "JPEG", real_format: str = "JPEG"):
    real = make_image_folder(root / "real", CLASSES, n, size=size, seed=1)
    fake = make_image_folder(root / "fake", CLASSES, n, size=size, seed=2)
    if real_format == "JPEG":
        _to_jpeg(real)
    _add_grid(fake, synthetic_format)
    return real, fake


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return make_pair(tmp_path_factory.mktemp("pair"))


def tiny_cfg(**kw) -> DetectorConfig:
    stage = dict(epochs=3, batch_size=16, threads=2)
    base = DetectorConfig(
        backbone="airnet",
        classes=CLASSES,
        image_size=32,
        val_fraction=0.25,
        head=dataclasses.replace(DetectorConfig().head, **stage),
        finetune=dataclasses.replace(DetectorConfig().finetune, **{**stage, "epochs": 1}),
        scratch=dataclasses.replace(DetectorConfig().scratch, **{**stage, "epochs": 6, "lr": 0.05}),
    )
    return dataclasses.replace(base, **kw)


def data_of(pair, cfg: DetectorConfig):
    real, fake = pair
    return load_detector_data(
        real=str(real),
        synthetic=str(fake),
        classes=cfg.classes,
        size=cfg.image_size,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        normalize_format=cfg.normalize_quality if cfg.normalize_format else None,
    )


# ---------------------------------------------------------------- backbones and the head


@pytest.mark.parametrize("name", sorted(n for n in BACKBONES if not BACKBONES[n].hub_id))
def test_every_backbone_builds_with_the_shared_head(name):
    model = build_detector(name, pretrained=False, input_size=32)
    head = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [h.out_features for h in head] == [128, 1]  # Dense 128 -> 1 logit, for every backbone
    assert head[0].in_features == model.backbone.num_features
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1) and torch.isfinite(out).all()


HUB_BACKBONES = sorted(n for n in BACKBONES if BACKBONES[n].hub_id)


def _tiny_hub_model(name: str, folder: Path):
    """A randomly initialised, tiny model of a hub backbone's family, saved as `from_pretrained` reads it."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    m = (
        CLIPVisionModel(CLIPVisionConfig(intermediate_size=64, **small))
        if name.startswith("clip")
        else Dinov2Model(Dinov2Config(mlp_ratio=2, **small))
    )
    m.save_pretrained(str(folder))
    return m.eval()


def _tiny_hub_config(name: str) -> dict:
    """A tiny config of a hub backbone's family (2 layers of width 32), as a bundle records it: built offline."""
    from transformers import CLIPVisionConfig, Dinov2Config

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    if name.startswith("clip"):
        return CLIPVisionConfig(intermediate_size=64, **small).to_dict()
    return Dinov2Config(mlp_ratio=2, **small).to_dict()


# What each registered backbone must be made of: module class -> count over its blocks, its feature width, its
# number of blocks ("fine-tune the top N" units). A name added to the registry fails here until it has a line.
BACKBONE_ANATOMY = {
    "efficientnet_lite0": ({"DepthwiseSeparableConv": 1, "InvertedResidual": 15, "SqueezeExcite": 0}, 1280, 9),
    "efficientnet_b0": ({"MBConv": 16, "SqueezeExcitation": 16}, 1280, 9),
    "resnet18": ({"BasicBlock": 8, "Bottleneck": 0}, 512, 5),
    "resnet50": ({"Bottleneck": 16, "BasicBlock": 0}, 2048, 5),
    "vgg16": ({"Conv2d": 13, "MaxPool2d": 5, "BatchNorm2d": 0}, 512, 5),
    "npr": ({"NPRStem": 1, "BasicBlock": 6}, 128, 4),
    "airnet": ({"ConvBlock": 3, "GELU": 7}, 128, 4),
    "clip_vit_l14": ({"CLIPVisionEmbeddings": 1, "CLIPEncoderLayer": 2, "Dinov2Layer": 0}, 32, 4),
    "dinov2_base": ({"Dinov2Embeddings": 1, "Dinov2Layer": 2, "CLIPEncoderLayer": 0}, 32, 4),
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_registered_backbone_builds_the_architecture_it_names(name):
    from collections import Counter

    from synthgap.models.registry import build_backbone

    hub = _tiny_hub_config(name) if BACKBONES[name].hub_id else None
    bb = build_backbone(name, pretrained=False, hub_config=hub)
    counts = Counter(type(m).__name__ for m in bb.blocks.modules())
    modules, features, n_blocks = BACKBONE_ANATOMY[name]
    assert {k: counts[k] for k in modules} == modules
    assert (bb.num_features, len(bb.blocks)) == (features, n_blocks)
    if name == "airnet":  # its own stem: a 2x2 conv to 24 channels, and max pooling (airbench)
        stem = bb.blocks[0][0]
        assert (stem.kernel_size, stem.out_channels) == ((2, 2), 24)
        assert isinstance(bb.pool, torch.nn.AdaptiveMaxPool2d)
    if name == "npr":
        assert type(bb.blocks[0]).__name__ == "NPRStem"


def test_a_registered_backbone_without_a_builder_is_an_error_not_another_network(monkeypatch):
    from synthgap.models.registry import build_backbone

    monkeypatch.setitem(BACKBONES, "newnet", BACKBONES["airnet"])  # registered, but nobody wrote its builder
    with pytest.raises(SynthgapError, match="backbone 'newnet' is in the model registry but .* no builder"):
        build_backbone("newnet", pretrained=False)
    # A hub model of another family, given the hub builder: refused, not cut up as DINOv2.
    import synthgap.models.registry as registry

    monkeypatch.setitem(BACKBONES, "siglip_base", BACKBONES["dinov2_base"])
    monkeypatch.setitem(registry.BACKBONE_BUILDERS, "siglip_base", registry.BACKBONE_BUILDERS["dinov2_base"])
    with pytest.raises(SynthgapError, match="backbone 'siglip_base': a hub backbone of a family"):
        build_backbone("siglip_base", pretrained=False, hub_config=_tiny_hub_config("dinov2_base"))


@pytest.mark.parametrize("name", HUB_BACKBONES)
def test_a_hub_backbone_loads_a_saved_model_and_its_blocks_give_the_models_own_feature(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = _tiny_hub_model(name, tmp_path / name)
    model = build_detector(name, model_id=str(tmp_path / name), input_size=32).eval()
    assert len(model.backbone.blocks) == 4  # embeddings, 2 layers, final norm: "top N blocks" are layers
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.backbone(x), hf(pixel_values=x).pooler_output, atol=1e-5)
        bigger = model.backbone(torch.rand(1, 3, 64, 64))  # other sizes: interpolated position embeddings
    assert bigger.shape == (1, 32)
    assert model.backbone.hub["model_id"] == str(tmp_path / name)
    with pytest.raises(SynthgapError, match="backbone_model"):
        build_detector(name, model_id=str(tmp_path / "no-such-model"), input_size=32)


@pytest.mark.parametrize("name", HUB_BACKBONES)
def test_a_hub_backbone_trains_with_the_shared_head_and_its_bundle_needs_no_hub(name, pair, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _tiny_hub_model(name, tmp_path / name)
    cfg = tiny_cfg(backbone=name, backbone_model=str(tmp_path / name), input_size=32, finetune_blocks=1)
    data = data_of(pair, cfg)
    meta = run_detector(data, cfg, tmp_path / "out", progress=False)
    assert list(meta["training"]["stages"]) == ["head", "finetune"]  # cached features, then the top layer
    assert meta["architecture"]["hub"]["model_id"] == str(tmp_path / name)
    shutil.rmtree(tmp_path / name)  # the bundle rebuilds the network from its own record
    bundle = load_bundle(tmp_path / "out")
    p = bundle.predict(data.test.images)
    accuracy = ((p >= bundle.threshold).long() == data.test.labels).float().mean().item()
    assert accuracy == pytest.approx(meta["metrics"]["accuracy"])


def test_efficientnet_lite0_loads_the_packaged_weights_and_recognises_a_photo():
    from matplotlib import cbook

    model = build_detector("efficientnet_lite0", pretrained=True, input_size=224).eval()
    # The ImageNet classifier the package ships: rebuild timm's model around the same weights.
    import timm

    from synthgap.models.backbones import lite0_weights

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(dict(zip(net.state_dict(), lite0_weights().values())))
    assert torch.equal(model.backbone.blocks[0][0].weight, net.conv_stem.weight)
    photo = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        top5 = net((x - 0.5) / 0.5).softmax(1)[0].topk(5).indices.tolist()
    assert 652 in top5  # ImageNet 652: military uniform (Grace Hopper in uniform)
    # The detector's own preprocessing gives the backbone the same input as above.
    from synthgap.train.augment import normalize

    with torch.no_grad():
        ours = model.features(normalize((x * 255).round().to(torch.uint8)))
        ref = net.forward_head(net.forward_features((x - 0.5) / 0.5), pre_logits=True)
    assert torch.allclose(ours, ref, atol=1e-3)


def test_freezing_counts_and_frozen_batchnorm():
    model = build_detector("efficientnet_lite0", pretrained=False, input_size=32)
    head = sum(p.numel() for p in model.head.parameters())
    blocks = [sum(p.numel() for p in b.parameters()) for b in model.backbone.blocks]
    trainable = lambda: sum(p.numel() for p in model.parameters() if p.requires_grad)  # noqa: E731
    model.backbone.set_trainable(0)
    assert trainable() == head
    model.backbone.set_trainable(2)
    assert trainable() == head + sum(blocks[-2:])
    model.backbone.set_trainable(-1)
    assert trainable() == head + sum(blocks)
    model.backbone.set_trainable(2)
    model.train()
    frozen_bn = [m for b in model.backbone.blocks[:-2] for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    live_bn = [m for b in model.backbone.blocks[-2:] for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert frozen_bn and not any(m.training for m in frozen_bn)
    assert live_bn and all(m.training for m in live_bn)


def test_training_with_a_frozen_backbone_changes_only_the_trainable_part(pair):
    cfg = tiny_cfg()
    data = data_of(pair, cfg)
    model = build_detector("efficientnet_lite0", pretrained=False, input_size=32)
    model.backbone.set_trainable(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(data.train, dataclasses.replace(cfg.head, epochs=1), model=model, val=data.val, progress=False)
    after = model.state_dict()
    top = len(model.backbone.blocks) - 1
    for k, v in before.items():
        changed = not torch.equal(v, after[k])
        if k.startswith("head."):
            assert changed or "bias" in k, k
        elif k.startswith(f"backbone.blocks.{top}."):
            continue  # trainable: may change
        else:  # frozen blocks: weights and BatchNorm statistics untouched
            assert not changed, k


def test_frozen_blocks_run_in_slices_with_the_same_output_and_gradients(monkeypatch):
    """A training step cuts the batch into slices through the frozen blocks (their activations are the
    memory peak at photo size); the loss and the trainable gradients are those of the whole batch."""
    import synthgap.models.backbones as backbones

    torch.manual_seed(0)
    model = build_detector("efficientnet_lite0", pretrained=False, input_size=32)
    model.backbone.set_trainable(2)
    model.train()
    x = torch.randn(12, 3, 32, 32)

    def step():
        model.zero_grad()
        torch.manual_seed(1)  # the head's dropout: the same mask both times
        out = model(x)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    sliced_calls = []
    run = backbones.Backbone._run
    monkeypatch.setattr(backbones.Backbone, "_run", staticmethod(lambda b, t: sliced_calls.append(len(t)) or run(b, t)))
    whole_out, whole_grads = step()
    assert sliced_calls == [12, 12]  # frozen, then trainable blocks, the batch whole
    sliced_calls.clear()
    monkeypatch.setattr(backbones, "FROZEN_SLICE_PIXELS", 5 * 32 * 32)
    out, grads = step()
    assert sliced_calls == [5, 5, 2, 12]
    assert torch.allclose(out, whole_out, atol=1e-5)
    assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(grads, whole_grads))


# ---------------------------------------------------------------- training, evaluation, bundle


@pytest.fixture(scope="module")
def trained(pair, tmp_path_factory):
    cfg = tiny_cfg()
    data = data_of(pair, cfg)
    out = tmp_path_factory.mktemp("det")
    meta = run_detector(data, cfg, out, progress=False)
    return cfg, data, out, meta


def test_small_cnn_learns_the_difference_and_writes_everything(trained):
    cfg, data, out, meta = trained
    assert meta["metrics"]["accuracy"] >= 0.9 and meta["metrics"]["auc"] >= 0.95
    for f in (
        "model.safetensors",
        "detector.json",
        "metrics.json",
        "format_bias.json",
        "audit/audit.json",
        "audit/audit.html",
        "summary.md",
        "confusion.png",
        "roc_calibration.png",
        "report.html",
        "config.yaml",
        "environment.json",
    ):
        assert (out / f).stat().st_size > 0, f
    html = (out / "report.html").read_text()
    assert "Robustness" in html and "Format-bias audit" in html and "data:image/png;base64" in html
    assert "Data audit" in html and meta["data_audit"]["dedupe"] == "drop" and meta["data_audit"]["images"] > 0
    names = [r["test set"] for r in meta["robustness"]]
    assert names == [
        "clean",
        *(f"jpeg q{q}" for q in (95, 90, 75, 60, 50)),  # the re-encodings photos meet
        "downscale x0.5",
        "blur sigma 1",
    ]


def test_bundle_round_trip_gives_the_same_predictions(trained):
    cfg, data, out, meta = trained
    bundle = load_bundle(out)
    assert bundle.threshold == meta["threshold"] and bundle.image_size == 32
    assert bundle.meta["architecture"]["backbone"] == "airnet"
    p1 = bundle.predict(data.test.images)
    saved = DetectorBundle(bundle.model, bundle.meta).save(out / "copy")
    p2 = load_bundle(saved).predict(data.test.images)
    assert torch.allclose(p1, p2)
    metrics = json.loads((out / "metrics.json").read_text())
    y = data.test.labels.numpy()
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy_score(y, (p1.numpy() >= bundle.threshold)))


def test_threshold_comes_from_validation_never_from_test(trained):
    cfg, data, out, meta = trained
    bundle = load_bundle(out)
    expected = choose_threshold(data.val.labels.numpy(), bundle.predict(data.val.images).numpy())
    assert meta["threshold"] == pytest.approx(expected)
    # Turn the test labels upside down: the test figures collapse, the threshold does not move.
    flipped = dataclasses.replace(data, test=dataclasses.replace(data.test, labels=1 - data.test.labels))
    result = evaluate_detector(bundle.model, flipped, cfg, robustness=False)
    assert result["threshold"] == pytest.approx(expected)
    assert result["test"]["accuracy"] < 0.5


def test_the_real_bound_is_a_quantile_of_the_validation_real_images_and_never_above_the_threshold(trained):
    cfg, data, out, meta = trained
    bundle = load_bundle(out)
    from synthgap.detect.report import real_bound_lead

    assert "real_bound" not in meta and bundle.real_bound is None and real_bound_lead(None) == ""  # off by default
    p_val = bundle.predict(data.val.images).numpy()
    real_val = p_val[data.val.labels.numpy() == 0]
    for q in (0.5, 0.9):
        result = evaluate_detector(bundle.model, data, dataclasses.replace(cfg, real_quantile=q), robustness=False)
        bound = result["real_bound"]
        assert bound["n_val_real"] == len(real_val) and bound["quantile"] == q
        assert bound["p"] == pytest.approx(min(np.quantile(real_val, q), result["threshold"]), abs=1e-6)
        lead = real_bound_lead(bound)  # the report's sentence
        assert f"under P {bound['p']:.3f}, which {q:.0%} of its {len(real_val)} validation real images" in lead
    with pytest.raises(SynthgapError, match="real_quantile"):
        check_detector_config(dataclasses.replace(cfg, real_quantile=1.0))


def test_binary_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.4 + rng.random(300) * 0.6, 0, 1)
    m = binary_metrics(y, p, 0.55)
    pred = (p >= 0.55).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["average_precision"] == pytest.approx(average_precision_score(y, p))
    assert m["f1_synthetic"] == pytest.approx(f1_score(y, pred))
    assert m["per_class"]["real"]["f1"] == pytest.approx(f1_score(1 - y, 1 - pred))
    assert np.asarray(m["confusion_matrix"]).sum() == 300
    # Perfectly calibrated scores have (near) zero calibration error; constant 0.5 on a 50/50 set too.
    assert binary_metrics(np.array([0, 1] * 50), np.full(100, 0.5), 0.5)["ece"] == pytest.approx(0.0)


def test_choose_threshold_separates_when_it_can():
    y = np.array([0] * 50 + [1] * 50)
    p = np.concatenate([np.linspace(0.0, 0.3, 50), np.linspace(0.35, 0.6, 50)])
    t = choose_threshold(y, p)
    assert 0.3 < t <= 0.35
    assert binary_metrics(y, p, t)["accuracy"] == 1.0


def test_one_logit_training_uses_the_sigmoid_loss():
    from synthgap.train.evaluate import logits_to_proba, loss_fn

    logits = torch.tensor([[2.0], [-1.0]])
    y = torch.tensor([1, 0])
    assert loss_fn(logits, y, 0.0) == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.float()).item()
    )
    p = logits_to_proba(logits)
    assert torch.allclose(p[:, 1], torch.sigmoid(logits[:, 0])) and torch.allclose(p.sum(1), torch.ones(2))


def test_pretrained_two_stages_with_cached_features(pair, tmp_path):
    cfg = tiny_cfg(backbone="efficientnet_lite0", input_size=32, finetune_blocks=1)
    data = data_of(pair, cfg)
    model, history = train_detector(data, cfg, tmp_path, progress=False)
    assert list(history) == ["head", "finetune"]
    assert history["head"]["feature_seconds"] > 0
    assert (tmp_path / "stages" / "head" / "checkpoint.pt").exists()
    # Resuming a finished run retrains nothing and gives the same model.
    again, history2 = train_detector(data, cfg, tmp_path, resume=True, progress=False)
    assert history2["finetune"]["history"] == history["finetune"]["history"]
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_stage_field_the_detector_overrides_is_named_not_silently_dropped():
    from synthgap.detect.config import ignored_stage_fields

    assert ignored_stage_fields(DetectorConfig()) == [] and ignored_stage_fields(tiny_cfg()) == []
    head = dataclasses.replace(DetectorConfig().head, model="resnet18", seed=5, tta=True)
    lines = ignored_stage_fields(DetectorConfig(seed=3, head=head, scratch=dataclasses.replace(head, seed=3)))
    assert [line.split(" is ignored")[0] for line in lines] == [
        "config field 'head.model' (resnet18)",
        "config field 'head.seed' (5)",
        "config field 'scratch.model' (resnet18)",
        "config field 'head.tta'",  # the head reads cached features: no flip
    ]
    on_images = dataclasses.replace(head, model="airnet", seed=0)  # tta is read when the head trains on images
    assert ignored_stage_fields(DetectorConfig(cache_features=False, head=on_images)) == []


# ---------------------------------------------------------------- robustness transforms


def test_jpeg_degrades_more_at_lower_quality():
    x = (
        torch.from_numpy(
            np.asarray(
                Image.open(__import__("matplotlib").cbook.get_sample_data("grace_hopper.jpg"))
                .convert("RGB")
                .resize((64, 64))
            )
        )
        .permute(2, 0, 1)[None]
        .contiguous()
    )
    err = {q: (robust.jpeg(x, q).float() - x.float()).abs().mean().item() for q in (95, 75, 50)}
    assert 0 < err[95] < err[75] < err[50]
    assert robust.jpeg(x, 75).dtype == torch.uint8 and robust.jpeg(x, 75).shape == x.shape


def test_downscale_and_blur():
    flat = torch.full((2, 3, 16, 16), 100, dtype=torch.uint8)
    assert torch.equal(robust.downscale(flat, 0.5), flat)
    assert torch.equal(robust.blur(flat, torch.tensor([0.5, 2.0])), flat)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 255).to(torch.uint8).expand(1, 3, 16, 16)
    down = robust.downscale(checker, 0.5)
    assert down.shape == checker.shape and down.float().std() < 20  # 1-pixel detail gone, size kept
    two = torch.cat([checker, checker])
    blurred = robust.blur(two, torch.tensor([0.05, 2.0]))  # a sigma per image
    assert torch.equal(blurred[0], checker[0]) and blurred[1].float().std() < 10
    from torchvision.transforms.v2.functional import gaussian_blur

    ref = gaussian_blur(checker.float(), kernel_size=[7, 7], sigma=[1.0, 1.0]).round()
    assert (robust.blur(checker, 1.0).float() - ref).abs()[..., 3:-3, 3:-3].max() <= 1


def test_robust_augment_is_seeded_and_hits_the_requested_share():
    x = torch.randint(0, 256, (200, 3, 16, 16), dtype=torch.uint8)
    cfg = AugmentConfig(jpeg=0.5)
    a = robust.robust_augment(x, cfg, torch.Generator().manual_seed(3))
    b = robust.robust_augment(x, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    hit = (a != x).flatten(1).any(1).float().mean().item()
    assert 0.35 < hit < 0.65
    assert torch.equal(robust.robust_augment(x, AugmentConfig(), torch.Generator()), x)


# ---------------------------------------------------------------- the bias audit in a run


def test_audit_catches_a_planted_format_shortcut_and_normalize_format_removes_it(tmp_path):
    real, fake = make_pair(tmp_path / "d", n=20, synthetic_format="PNG")  # real = JPEG, synthetic = PNG
    cfg = tiny_cfg(scratch=dataclasses.replace(tiny_cfg().scratch, epochs=1))
    meta = run_detector(data_of((real, fake), cfg), cfg, tmp_path / "raw", progress=False)
    audit = json.loads((tmp_path / "raw" / "format_bias.json").read_text())
    assert audit["biased"] is True and "format" in audit["leaking_features"]
    assert meta["format_bias"]["verdict"].startswith("WARNING")
    cfg = dataclasses.replace(cfg, normalize_format=True)
    meta = run_detector(data_of((real, fake), cfg), cfg, tmp_path / "normalized", progress=False)
    audit = json.loads((tmp_path / "normalized" / "format_bias.json").read_text())
    assert audit["biased"] is False and "format" not in audit["leaking_features"]
    assert meta["preprocessing"]["normalize_format"] == cfg.normalize_quality


# ---------------------------------------------------------------- Optuna


def test_interrupted_study_resumes_where_it_stopped(pair, tmp_path, monkeypatch):
    import optuna

    from synthgap.detect import tune

    cfg = tiny_cfg(scratch=dataclasses.replace(tiny_cfg().scratch, epochs=2))
    data = data_of(pair, cfg)
    real_train = tune.train_detector
    calls = {"n": 0}

    def interrupted(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C in the third trial
        return real_train(*a, **kw)

    monkeypatch.setattr(tune, "train_detector", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune.tune_detector(data, cfg, tmp_path, trials=4, sampler="random", progress=False)
    study = optuna.load_study(study_name="detector", storage=f"sqlite:///{tmp_path / 'study.db'}")
    first = [(t.number, t.params) for t in study.trials if t.state.name == "COMPLETE"]
    assert len(first) == 2
    monkeypatch.setattr(tune, "train_detector", real_train)
    summary = tune.tune_detector(data, cfg, tmp_path, trials=4, sampler="random", progress=False)
    study = optuna.load_study(study_name="detector", storage=f"sqlite:///{tmp_path / 'study.db'}")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4  # two more, not four more
    assert [(t.number, t.params) for t in study.trials if t.number < 2] == first  # kept, not rerun
    assert summary["best_value"] == max(t.value for t in study.trials if t.state.name == "COMPLETE")
    best = (tmp_path / "best.yaml").read_text()
    assert f"head_width: {summary['best_params']['head_width']}" in best
    assert (tmp_path / "trials.csv").read_text().count("\n") == len(study.trials) + 1
    assert (tmp_path / "tune_history.png").exists()
    # Another config in the same folder would mix incomparable trials: refused.
    with pytest.raises(SynthgapError, match="another config"):
        tune.tune_detector(data, dataclasses.replace(cfg, dropout=0.1), tmp_path, trials=5, progress=False)


# ---------------------------------------------------------------- command line


@pytest.mark.slow
def test_cli_train_detect_and_compare(pair, tmp_path):
    real, fake = pair
    common = [
        "--real",
        str(real),
        "--synthetic",
        str(fake),
        "--set",
        "classes=bird,cat,frog",
        "--set",
        "scratch.epochs=4",
        "--set",
        "scratch.batch_size=16",
        "--set",
        "scratch.lr=0.05",
        "--set",
        "head.epochs=2",
        "--set",
        "head.batch_size=16",
        "--set",
        "finetune_blocks=0",
        "--set",
        "input_size=32",
        "--set",
        "val_fraction=0.25",
    ]
    out = tmp_path / "bundle"
    proc = synthgap("detector", "train", *common, "--backbone", "airnet", "--out", str(out), in_subprocess=True)
    assert "test accuracy" in proc.stdout and "format-bias audit" in proc.stdout
    # detect: files and folders, a table or JSON lines; a broken file is reported, not fatal.
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    files = sorted((fake / "test" / "cat").glob("*.jpg"))[:3] + sorted((real / "test" / "cat").glob("*.jpg"))[:3]
    proc = synthgap(
        "detect", *map(str, files), str(tmp_path / "broken.jpg"), "--model", str(out), "--json", in_subprocess=True
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 7 and rows[-1]["p_synthetic"] is None and "error" in rows[-1]
    t = rows[0]["threshold"]
    assert [r["p_synthetic"] >= t for r in rows[:6]] == [True] * 3 + [False] * 3
    # The planted grid moves under a 1-pixel shift: a verdict may be "unsure", never the wrong side.
    assert {r["verdict"] for r in rows[:3]} <= {"synthetic", "unsure"} and {r["verdict"] for r in rows[3:6]} <= {
        "real",
        "unsure",
    }
    assert all(r["rule"] in ("threshold", "unstable") and r["domain"]["inside"] for r in rows[:6])
    table = synthgap("detect", str(fake / "test"), "--model", str(out)).stdout.splitlines()
    assert len(table) == len(list((fake / "test").rglob("*.jpg")))
    # compare: the same head, data and budget for each backbone.
    proc = synthgap(
        "detector",
        "compare",
        *common,
        "--backbones",
        "airnet,efficientnet_lite0",
        "--out",
        str(tmp_path / "cmp"),
        in_subprocess=True,
    )
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["backbone"] for r in rows] == ["airnet", "efficientnet_lite0"]
    assert (tmp_path / "cmp" / "comparison.png").exists() and (
        tmp_path / "cmp" / "efficientnet_lite0" / "detector.json"
    ).exists()
    assert "| airnet |" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_cifake_layout_loads_through_data(tmp_path):
    root = tmp_path / "cifake"
    for k, split in enumerate(("train", "test")):  # other seeds per split: the same ones would be twins, dropped
        make_image_folder(root / split / "REAL", ["x"], 6, size=16, splits=(), seed=1 + 10 * k)
        make_image_folder(root / split / "FAKE", ["x"], 5, size=16, splits=(), seed=2 + 10 * k)
    # The drawn images differ only in noise and where a small shape sits: some are near twins by the audit's
    # measure. This test is about the layout, so nothing is dropped.
    data = load_detector_data(data=str(root), classes=CLASSES, size=16, val_fraction=0.2, dedupe="warn")
    assert len(data.train) + len(data.val) == 11 and len(data.test) == 11
    assert data.test.class_counts() == {"real": 6, "synthetic": 5}
    assert all("REAL" in f for f, y in zip(data.test.files, data.test.labels) if y == 0)
    # Class folders inside each split's REAL/FAKE: every image of the split is taken, none held out.
    nested = tmp_path / "nested"
    for k, split in enumerate(("train", "test")):
        make_image_folder(nested / split / "REAL", CLASSES, 4, size=16, splits=(), seed=1 + 10 * k)
        make_image_folder(nested / split / "FAKE", CLASSES, 3, size=16, splits=(), seed=2 + 10 * k)
    data = load_detector_data(data=str(nested), classes=CLASSES, size=16, val_fraction=0.2, dedupe="warn")
    assert data.test.class_counts() == {"real": 12, "synthetic": 9}
    assert len(data.train) + len(data.val) == 21


@pytest.mark.parametrize(
    "args, message",
    [
        (["--real", "{real}"], "needs both a real and a synthetic"),
        (["--data", "{real}"], "expected a real and a synthetic folder"),
        (["--real", "{real}", "--synthetic", "{real}/nope"], "no such file or folder"),
        (["--real", "{real}", "--synthetic", "{fake}", "--backbone", "alexnet"], "unknown 'alexnet'"),
        (["--real", "{real}", "--synthetic", "{fake}", "--set", "head_width=abc"], "head_width"),
        (
            ["--real", "{real}", "--synthetic", "{fake}", "--set", "finetune.augment.jpeg_quality=[0,50]"],
            "finetune.augment.jpeg_quality",
        ),
        (["--real", "{real}", "--synthetic", "{fake}", "--set", "train_size=-1"], "'train_size': expected at least 1"),
    ],
)
def test_user_mistakes_are_clear_errors(pair, tmp_path, args, message):
    real, fake = pair
    args = [a.format(real=real, fake=fake) for a in args]
    proc = synthgap(
        "detector", "train", *args, "--set", "classes=bird,cat,frog", "--out", str(tmp_path / "o"), check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_detect_rejects_a_folder_that_is_not_a_bundle(tmp_path):
    (tmp_path / "im.png").write_bytes(b"x")
    proc = synthgap("detect", str(tmp_path / "im.png"), "--model", str(tmp_path), check=False)
    assert proc.returncode == 2 and "not a detector bundle" in proc.stderr


# ---------------------------------------------------------------- the training domain and trustworthy verdicts


def test_the_bundle_records_its_training_domain_and_sources(trained):
    _, _, _, meta = trained
    domain = meta["domain"]
    assert domain["width"] == domain["height"] == [32, 32] and domain["formats"] == ["JPEG"]
    assert (
        domain["jpeg_quality"][0] <= 90 <= domain["jpeg_quality"][1]
    )  # the files' q90, widened by the JPEG augmentation
    assert domain["sources"] == {"real": ["real"], "synthetic": ["fake"]}
    assert (
        meta["sources"]["synthetic"]["fake"]["test"] == 3 * 24 // 5 or meta["sources"]["synthetic"]["fake"]["test"] > 0
    )


def test_a_photo_sized_image_is_outside_a_32px_detector_and_a_training_like_one_is_not(trained, tmp_path):
    _, _, out, _ = trained
    bundle = load_bundle(out)
    big = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (2000, 3000, 3), dtype=np.uint8)).save(big, quality=90)
    small = tmp_path / "thumb.jpg"
    Image.open(big).resize((32, 32)).save(small, quality=90)
    png = tmp_path / "thumb.png"
    Image.open(small).save(png)
    far, near, other_format = bundle.assess_files([str(big), str(small), str(png)])
    assert far["verdict"] == "outside the training domain" and far["rule"] == "outside_domain" and not far["reliable"]
    assert far["domain"]["why"] == ["size 3000x2000 px, trained on 32x32 px"] and 0 <= far["p_synthetic"] <= 1
    assert near["domain"] == {"inside": True, "why": []} and near["verdict"] != "outside the training domain"
    assert other_format["rule"] == "outside_domain" and "format PNG" in other_format["why"]


def test_verdict_rules_outside_unstable_near_threshold_and_stable():
    from synthgap.detect.domain import verdicts

    domain = {"width": [32, 32], "height": [32, 32], "formats": ["JPEG"], "jpeg_quality": [70, 80]}
    meta = {"format": "JPEG", "width": 32, "height": 32, "jpeg_quality": 75}
    p = torch.tensor([0.9, 0.9, 0.55, 0.2, 0.9])
    # perturbation-major: jpeg q90, downscale, shift for each of the 5 images
    pp = torch.tensor([[0.9, 0.3, 0.56, 0.2, 0.92], [0.88, 0.91, 0.54, 0.21, 0.9], [0.91, 0.9, 0.55, 0.19, 0.9]])
    metas = [meta, meta, meta, meta, {**meta, "jpeg_quality": 30}]
    rec = verdicts(p, pp.flatten(), 0.5, metas, domain, band=0.1)
    assert [r["rule"] for r in rec] == ["threshold", "unstable", "near_threshold", "threshold", "outside_domain"]
    assert [r["verdict"] for r in rec] == ["synthetic", "unsure", "unsure", "real", "outside the training domain"]
    assert rec[1]["p_range"] == [0.3, 0.91] and "jpeg q90" in rec[1]["why"] and not rec[1]["reliable"]
    assert "JPEG quality 30" in rec[4]["why"] and rec[0]["reliable"] and rec[3]["reliable"]
    # with a "real" bound: below the threshold but not below the bound is unsure, below it real
    bound = {"p": 0.1, "quantile": 0.5, "n_val_real": 20}
    p = torch.tensor([0.05, 0.3, 0.1, 0.7])
    rec = verdicts(p, p.repeat(3), 0.5, [meta] * 4, domain, real_bound=bound)
    assert [r["verdict"] for r in rec] == ["real", "unsure", "unsure", "synthetic"]
    assert rec[1]["rule"] == "not_confidently_real" and "50% of its validation real images" in rec[1]["why"]
    assert [r["rule"] for r in verdicts(p, p.repeat(3), 0.5, [meta] * 4, domain)] == ["threshold"] * 4


def test_a_detector_on_chosen_backbone_blocks_pools_their_outputs_side_by_side_and_its_bundle_rebuilds_it(tmp_path):
    from synthgap.detect.crops import InputChain
    from synthgap.detect.probes import probe_config
    from synthgap.detect.train import bundle_meta, new_detector

    torch.manual_seed(0)
    full = build_detector("efficientnet_lite0", input_size=64).eval()
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():  # the same pretrained weights: each block's output, pooled
        h, pooled = full.backbone_input(x), []
        for block in full.backbone.blocks:
            h = block(h)
            pooled.append(h.mean((2, 3)))
    low = build_detector("efficientnet_lite0", input_size=64, blocks=[4]).eval()
    assert len(low.backbone.blocks) == 4 and low.backbone.num_features == 40  # Lite0's third MBConv stage
    both = build_detector("efficientnet_lite0", input_size=64, blocks=[9, 4]).eval()
    assert len(both.backbone.blocks) == 9 and both.backbone.num_features == 40 + 1280
    with torch.no_grad():
        assert torch.allclose(low.features(x), pooled[3], atol=1e-5)
        assert torch.allclose(both.features(x), torch.cat([pooled[3], pooled[8]], 1), atol=1e-5)
        # training the top block while the rest stay frozen (sliced, no graph) gives the same features
        both.backbone.set_trainable(1)
        with torch.enable_grad():
            assert torch.allclose(both.features(x), torch.cat([pooled[3], pooled[8]], 1), atol=1e-5)
    cfg = DetectorConfig(feature_blocks=[4, 9], input="resize", image_size=64)
    model = new_detector(cfg, InputChain("resize", 64)).eval()
    meta = bundle_meta(cfg, 0.5, model)
    assert meta["architecture"]["blocks"] == [4, 9]
    loaded = load_bundle(DetectorBundle(model, meta).save(tmp_path / "levels"))
    assert loaded.model.backbone.num_features == 1320
    assert torch.allclose(loaded.predict(x), DetectorBundle(model, meta).predict(x))
    assert probe_config(cfg).feature_blocks is None  # content is probed with the whole backbone
    for bad in ([0], [10], []):
        with pytest.raises(SynthgapError, match=r"feature_blocks: expected block counts from 1 to 9"):
            build_detector("efficientnet_lite0", blocks=bad)


def test_a_head_per_block_learns_apart_from_the_other_and_its_bundle_rebuilds_it(pair, tmp_path):
    from synthgap.data.sets import ImageSet
    from synthgap.detect.model import LevelHeads
    from synthgap.detect.train import StageTask, bundle_meta

    torch.manual_seed(0)
    heads = build_detector("efficientnet_lite0", input_size=64, blocks=[4, 9], head_per_block=True).head.eval()
    assert isinstance(heads, LevelHeads) and heads.widths == [40, 1280]
    f, y = torch.randn(6, 1320), torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():  # the detector's logit: the mean of each head's on its own part of the features
        each = torch.cat([heads.heads[0](f[:, :40]), heads.heads[1](f[:, 40:])], 1)
        assert torch.allclose(heads(f), each.mean(1, keepdim=True))
    task = StageTask(ImageSet(f, y, CLASSES, "features"), None, tiny_cfg().head, torch.device("cpu"), lambda x, g: x)

    def low_head_gradient():
        heads.zero_grad()
        task.loss(heads, (f, y)).backward()
        return [p.grad.clone() for p in heads.heads[0].parameters()]

    before = low_head_gradient()
    with torch.no_grad():  # another top-level head: the low-level head learns the same (a joint loss would not)
        for p in heads.heads[1].parameters():
            p.add_(torch.randn_like(p))
    assert all(torch.equal(a, b) for a, b in zip(before, low_head_gradient()))

    # trained end to end (head on cached features, then the top block through the detector) and saved
    cfg = tiny_cfg(backbone="efficientnet_lite0", input_size=32, finetune_blocks=1, feature_blocks=[4, 9])
    cfg = dataclasses.replace(cfg, head_per_block=True)
    model, history = train_detector(data_of(pair, cfg), cfg, tmp_path / "run", progress=False)
    assert list(history) == ["head", "finetune"] and isinstance(model.head, LevelHeads)
    meta = bundle_meta(cfg, 0.5, model)
    assert meta["architecture"]["head_per_block"] is True
    loaded = load_bundle(DetectorBundle(model.eval(), meta).save(tmp_path / "bundle"))
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(loaded.predict(x), DetectorBundle(model, meta).predict(x))
    with pytest.raises(SynthgapError, match="head_per_block"):
        train_detector(data_of(pair, cfg), dataclasses.replace(cfg, feature_blocks=[9]), tmp_path / "bad")
