"""The model zoo, augmentation, the training loop (seeding, resume, learning) and metrics."""

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from synthgap import SynthgapError
from synthgap.data import load_spec
from synthgap.models import build_model, count_parameters
from synthgap.train import augment, classification_metrics, evaluate, fit
from synthgap.train import loop as loop_module
from synthgap.train.config import AugmentConfig, TrainConfig

CLASSES = ["bird", "cat", "frog"]
FAST = dict(epochs=3, batch_size=16, widths=[8, 16, 16], lr=0.1, threads=1)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("shapes"), CLASSES, 40, size=16)
    return load_spec(str(root), "train", CLASSES, 16), load_spec(str(root), "test", CLASSES, 16)


@pytest.mark.parametrize("name", ["airnet", "airnet-wide", "resnet18"])
def test_models_build_by_name_and_give_logits(name):
    model = build_model(name, 6)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 6)
    assert count_parameters(model) > 0


def test_one_registry_names_classifiers_backbones_and_the_fid_features():
    from synthgap.models.registry import BACKBONES, CLASSIFIERS, FID_FEATURES, MODELS, build_backbone

    assert set(CLASSIFIERS) | set(BACKBONES) == set(MODELS) and FID_FEATURES in BACKBONES
    for name, info in CLASSIFIERS.items():  # every classifier takes its own input size
        assert build_model(name, 3)(torch.randn(2, 3, info.input_size, info.input_size)).shape == (2, 3)
    # `resnet18` as a classifier (old configs) is the CIFAR-stem network; as a backbone, torchvision's own.
    assert build_model("resnet18", 3).conv1.stride == (1, 1)
    assert build_backbone("resnet18", pretrained=False).blocks[0][0].stride == (2, 2)
    assert MODELS["resnet18"].mean != MODELS["resnet18-cifar"].mean


# What each registered classifier must be made of: module class -> count, its first conv's (kernel, stride,
# out channels), the head's input width. A name added to the registry fails here until it has a line (the
# backbones' table is test_detect's BACKBONE_ANATOMY).
CLASSIFIER_ANATOMY = {
    "airnet": ({"ConvBlock": 3, "MaxPool2d": 3, "BasicBlock": 0}, ((2, 2), (1, 1), 24), 128),
    "airnet-wide": ({"ConvBlock": 3, "MaxPool2d": 3, "BasicBlock": 0}, ((2, 2), (1, 1), 24), 256),
    "resnet18-cifar": ({"BasicBlock": 8, "MaxPool2d": 0, "ConvBlock": 0}, ((3, 3), (1, 1), 64), 512),
}


@pytest.mark.parametrize("name", sorted(CLASSIFIER_ANATOMY))
def test_every_registered_classifier_builds_the_architecture_it_names(name):
    from collections import Counter

    from synthgap.models.registry import CLASSIFIERS

    assert set(CLASSIFIERS) == set(CLASSIFIER_ANATOMY)
    model = build_model(name, 3)
    modules, first_conv, features = CLASSIFIER_ANATOMY[name]
    counts = Counter(type(m).__name__ for m in model.modules())
    assert {k: counts[k] for k in modules} == modules
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert (conv.kernel_size, conv.stride, conv.out_channels) == first_conv
    heads = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert heads == [(features, 3)]


def test_the_registry_names_the_cli_choices_and_errors_in_one_line_without_importing_torch():
    import subprocess
    import sys

    from synthgap.models.registry import BACKBONES, lookup

    # A name is known once its builder is registered: the CLI's --backbone choices are the registry's names,
    # and neither the registry nor the CLI loads torch to know them (`synthgap --help` stays fast).
    code = (
        "import sys; import synthgap.cli as cli; "
        "opt = next(p for p in cli.detector_train.params if p.name == 'backbone'); "
        "print(','.join(opt.type.choices)); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [",".join(BACKBONES), "False"]
    with pytest.raises(SynthgapError) as e:
        lookup("backbone", "alexnet")
    assert str(e.value) == f"unknown backbone 'alexnet'; choose one of: {', '.join(BACKBONES)}"
    with pytest.raises(SynthgapError, match=r"^config field 'backbone': unknown 'alexnet'; choose one of: efficie"):
        lookup("backbone", "alexnet", field="config field 'backbone'")


def test_unknown_model_is_a_clear_error():
    with pytest.raises(SynthgapError, match="unknown model 'vgg99'.*airnet"):
        build_model("vgg99", 6)


def test_crop_without_padding_and_flip_off_is_identity():
    x = torch.randn(5, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, AugmentConfig(crop_pad=0, flip=False), g), x)


def test_crop_is_a_shift_of_the_padded_image():
    x = torch.arange(64.0).view(1, 1, 8, 8).expand(64, 3, 8, 8).contiguous()
    out = augment(x, AugmentConfig(crop_pad=2, flip=False), torch.Generator().manual_seed(1))
    # Interior pixels (away from the reflected border) are the original grid shifted by at most 2.
    centre = out[:, 0, 2:6, 2:6]
    shift = centre - x[:, 0, 2:6, 2:6]
    per_image = shift.flatten(1)
    assert torch.all(per_image == per_image[:, :1])  # one shift per image
    dy_dx = per_image[:, 0]
    assert set(dy_dx.tolist()) <= {8 * dy + dx for dy in range(-2, 3) for dx in range(-2, 3)}
    assert len(set(dy_dx.tolist())) > 5  # images get different shifts


def test_flip_mirrors_about_half_the_batch():
    x = torch.randn(200, 3, 4, 4)
    out = augment(x, AugmentConfig(crop_pad=0, flip=True), torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert torch.all(flipped | same) and 60 < flipped.sum() < 140


def test_optional_augmentations_keep_shape_and_change_pixels():
    x = torch.randn(8, 3, 16, 16)
    cfg = AugmentConfig(crop_pad=0, flip=False, rotate=15, zoom=0.2, brightness=0.2, contrast=0.2)
    out = augment(x, cfg, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.allclose(out, x)


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    m = classification_metrics(y, p, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert [m["per_class"][c]["precision"] for c in "abcd"] == pytest.approx(precision_score(y, p, average=None))
    assert [m["per_class"][c]["recall"] for c in "abcd"] == pytest.approx(recall_score(y, p, average=None))
    cm = np.array(m["confusion_matrix"])
    assert cm.sum() == 300 and np.trace(cm) == (y == p).sum()
    assert np.allclose(np.array(m["confusion_matrix_normalized"]).sum(1), 1, atol=1e-3)


def test_metrics_on_a_hand_checked_example():
    m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["x", "y"])
    assert m["accuracy"] == 0.75
    assert m["per_class"]["x"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]


def test_training_learns_the_shapes(shapes):
    train, test = shapes
    result = fit(train, TrainConfig(**{**FAST, "epochs": 6}), progress=False)
    assert evaluate(result.model, test)["accuracy"] >= 0.9
    assert len(result.history) == 6 and result.best_val_accuracy is not None


def test_same_seed_same_result_and_other_seed_differs(shapes):
    train, test = shapes
    a = fit(train, TrainConfig(**FAST, seed=3), progress=False)
    b = fit(train, TrainConfig(**FAST, seed=3), progress=False)
    c = fit(train, TrainConfig(**FAST, seed=4), progress=False)
    losses = lambda r: [h["train_loss"] for h in r.history]  # noqa: E731
    assert losses(a) == losses(b)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert losses(a) != losses(c)


def test_resume_after_interruption_ends_like_an_uninterrupted_run(shapes, tmp_path, monkeypatch):
    train, _ = shapes
    cfg = TrainConfig(**FAST)
    whole = fit(train, cfg, progress=False)

    real_save, saves = loop_module.save_torch, []

    def save_then_die(path, obj):
        real_save(path, obj)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt  # killed right after epoch 2's checkpoint

    monkeypatch.setattr(loop_module, "save_torch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(train, cfg, out_dir=tmp_path, progress=False)
    monkeypatch.setattr(loop_module, "save_torch", real_save)
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no partial file
    resumed = fit(train, cfg, out_dir=tmp_path, resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    for k, v in whole.model.state_dict().items():
        assert torch.allclose(v.float(), resumed.model.state_dict()[k].float())


def test_resume_refuses_a_checkpoint_of_another_config(shapes, tmp_path):
    train, _ = shapes
    fit(train, TrainConfig(**{**FAST, "epochs": 1}), out_dir=tmp_path, progress=False)
    with pytest.raises(SynthgapError, match="different config"):
        fit(train, TrainConfig(**{**FAST, "epochs": 1, "lr": 0.05}), out_dir=tmp_path, resume=True, progress=False)


def test_budget_sets_the_number_of_steps(shapes):
    train, _ = shapes
    r = fit(train, TrainConfig(**{**FAST, "val_fraction": 0}), budget_images=16 * 10, progress=False)
    assert r.history[-1]["step"] == 10


def test_progress_bars_only_where_a_person_watches_and_a_log_gets_one_line_per_epoch(shapes, capsys, monkeypatch):
    import sys

    from synthgap.io import progress_bar

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not progress_bar(range(3)).disable and progress_bar(range(3), enabled=False).disable
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert progress_bar(range(3)).disable
    capsys.readouterr()
    fit(shapes[0], TrainConfig(**{**FAST, "epochs": 2}), progress=True)
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert [line.split(":")[0] for line in lines] == ["train epoch 1/2", "train epoch 2/2"], lines
    assert "\r" not in out + err and "img/s" in lines[0]


def test_shared_batches_hold_the_share_of_the_first_kind_and_the_rest_in_the_epochs_order():
    from synthgap.data.sets import ImageSet
    from synthgap.train.loop import ClassifierTask, SharedBatchTask, split_task

    n = 40
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()  # pixel = index
    train = ImageSet(images, torch.arange(n) % 2, ["a", "b"], "mixed")
    first = torch.arange(n) < 4  # 4 of 40 images are of the first kind (10%)
    cfg, cpu = TrainConfig(val_fraction=0.0), torch.device("cpu")

    def drawn(task, seed=0):
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=g)
        return order, [x[:, 0, 0, 0].long() for x, _ in task.batches(order, 8, 5, g)]

    order, batches = drawn(SharedBatchTask(train, None, cfg, cpu, lambda x, g: x, first=first, share=0.5))
    assert all(int((idx < 4).sum()) == 4 for idx in batches)  # half of every batch, though they are a tenth
    rest = [i for idx in batches for i in idx[4:].tolist()]
    assert rest == [i for i in order.tolist() if i >= 4][:20]  # the rest: the epoch's order, none twice
    # a share no larger than the kind's own gives the plain batches
    _, plain = drawn(SharedBatchTask(train, None, cfg, cpu, lambda x, g: x, first=first, share=0.05))
    _, classic = drawn(ClassifierTask(train, None, cfg, cpu, lambda x, g: x))
    assert all(torch.equal(a, b) for a, b in zip(plain, classic))
    # split as fit splits a set: the mask follows the images into the training part
    task = split_task(train, TrainConfig(val_fraction=0.25), cpu, first, 0.5)
    assert len(task.train) == 30 and len(task.val) == 10
    assert torch.equal(task.first, task.train.images[:, 0, 0, 0] < 4)
