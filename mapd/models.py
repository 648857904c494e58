"""Network architectures used by the experiments, behind one registry.

``build_model(name, num_classes=..., in_channels=..., image_size=...)`` returns a freshly
initialised ``torch.nn.Module`` mapping a float batch (B, in_channels, H, W) to logits
(B, num_classes). ``image_size`` is the natural input size the caller will use (8 for sklearn
digits, 28 for MNIST, 32 for CIFAR, 224 for ImageNet-style data); every model ends with global
pooling, so it is checked for plausibility but does not fix the input size.

Registered names:

- ``small_cnn``: a compact conv-BN-ReLU network for CPU runs (see :class:`SmallCNN`).
- ``resnet18_cifar`` / ``resnet50_cifar``: torchvision ResNets with the CIFAR stem
  (3x3 stride-1 first conv, no max-pool), as used for the MAP-D audit runs.
- ``resnet50``: torchvision ResNet-50 with the ImageNet stem; ``pretrained=True`` loads
  torchvision's ImageNet weights (``IMAGENET1K_V2``).
- ``preact_resnet18``: PreAct ResNet-18 for the label-noise experiments (Arazo et al. 2019).
- ``resnet32``: the CIFAR ResNet-32 of He et al. 2016, used by the AUM baseline.

All models work with ``torch.channels_last`` inputs/weights and under
``torch.autocast("cpu", dtype=torch.bfloat16)``: there are no in-place additions that could
mix dtypes and no ops that assume a contiguous layout.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import fuse_conv_bn_eval

from mapd.errors import ConfigError

__all__ = [
    "PreActBlock",
    "PreActResNet18",
    "ResNet32",
    "SmallCNN",
    "available_models",
    "build_model",
    "fold_batchnorm",
]

# Below 8 pixels the three stride-2 stages of the small CNN / CIFAR ResNets would have nothing
# left to pool; ImageNet-style inputs are far above this.
MIN_IMAGE_SIZE = 8


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _init_conv(module: nn.Module) -> None:
    """He-normal (fan_out) init for convs, unit/zero init for norms, as torchvision ResNets do."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --- small CNN ------------------------------------------------------------------------------


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class _MaxPool2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` with a fast path for inference (same values, bit for bit).

    ATen's CPU max-pooling also writes an int64 argmax per output and is several times slower
    than the elementwise maximum of the four strided sub-grids. Without autograd (eval passes)
    the sub-grid maximum is used; training keeps the native op, whose backward sends each
    window's gradient to its first maximum.
    """

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return super().forward(x)
        v = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]  # floor, as MaxPool2d
        top = torch.maximum(v[..., 0::2, 0::2], v[..., 0::2, 1::2])
        return torch.maximum(top, torch.maximum(v[..., 1::2, 0::2], v[..., 1::2, 1::2]))


class SmallCNN(nn.Module):
    """Compact CNN for fast CPU training.

    Layout: a 3x3 conv-BN-ReLU stem at full resolution with ``stem_width`` channels, then one
    stage per entry of ``widths``: 2x2 max-pool followed by ``depth`` 3x3 conv-BN-ReLU layers,
    then global max-pooling and a linear classifier. Pooling *before* the convs of each stage
    and a narrow stem keep the full-resolution work (stem conv, BN, ReLU, first pool) small;
    it dominates the step time of such nets otherwise. Three stages halve an 8x8 input down
    to 1x1, so any input of at least 8x8 works.

    Args:
        num_classes: number of output logits.
        in_channels: input channels (1 for grey-scale, 3 for RGB).
        widths: channels per stage, e.g. (32, 64, 128).
        depth: conv-BN-ReLU layers per stage.
        stem_width: channels of the stem conv.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        widths: Sequence[int],
        depth: int,
        stem_width: int,
    ) -> None:
        super().__init__()
        layers = _conv_bn_relu(in_channels, stem_width)
        c = stem_width
        for w in widths:
            layers.append(_MaxPool2())
            for _ in range(depth):
                layers += _conv_bn_relu(c, w)
                c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        _init_conv(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> (B, num_classes) logits."""
        h = self.features(x)
        if h.requires_grad and torch.is_grad_enabled():
            return self.fc(torch.flatten(self.pool(h), 1))
        return self.fc(h.amax(dim=(2, 3)))  # the global max-pool's values, several times faster


def _small_cnn(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: int | Sequence[int] = 32,
    depth: int = 2,
    stem_width: int | None = None,
) -> nn.Module:
    """``width``: an int w gives stages (w, 2w, 4w); a sequence gives the stage widths.
    ``stem_width`` defaults to half the first stage width."""
    if isinstance(width, int):
        widths = [width, 2 * width, 4 * width]
    else:
        widths = list(width) if isinstance(width, (list, tuple)) else []
    if not widths or not all(_is_positive_int(w) for w in widths):
        raise ConfigError(
            f"small_cnn: width must be a positive int or a list of them, got {width!r}"
        )
    stem = max(1, widths[0] // 2) if stem_width is None else stem_width
    for key, value in (("depth", depth), ("stem_width", stem)):
        if not _is_positive_int(value):
            raise ConfigError(f"small_cnn: {key} must be a positive int, got {value!r}")
    if image_size < 2 ** len(widths):
        raise ConfigError(
            f"small_cnn: {len(widths)} pooling stages need image_size >= {2 ** len(widths)}, "
            f"got {image_size}"
        )
    return SmallCNN(
        num_classes=num_classes,
        in_channels=in_channels,
        widths=widths,
        depth=depth,
        stem_width=stem,
    )


# --- torchvision ResNets ----------------------------------------------------------------------


def _cifar_stem(model: nn.Module, in_channels: int) -> nn.Module:
    """Swap the ImageNet stem (7x7 stride-2 conv + max-pool) for a 3x3 stride-1 conv."""
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def _tvm() -> Any:
    # torchvision (and the torch._dynamo it pulls in) takes ~3 s to import: only for its models
    from torchvision import models

    return models


def _resnet18_cifar(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return _cifar_stem(_tvm().resnet18(weights=None, num_classes=num_classes), in_channels)


def _resnet50_cifar(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return _cifar_stem(_tvm().resnet50(weights=None, num_classes=num_classes), in_channels)


def _load_imagenet_resnet50_weights(weights_file: str | None = None) -> dict[str, torch.Tensor]:
    """torchvision's ResNet-50 IMAGENET1K_V2 state dict: from ``weights_file`` (a local copy the
    user provides, the way for machines without internet) or downloaded once into the hub cache."""
    weights = _tvm().ResNet50_Weights.IMAGENET1K_V2
    if weights_file is not None:
        from pathlib import Path

        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"resnet50: weights_file {str(path)!r} does not exist. Download "
                f"{weights.url} (torchvision's IMAGENET1K_V2) and give its path, or use "
                "pretrained: false."
            )
        try:  # plain data only: a weights file never runs code
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated, garbage or pickled objects: torch raises many types
            raise ConfigError(
                f"resnet50: weights_file {str(path)!r} is not a readable state dict "
                f"({type(e).__name__}: {e})"
            ) from e
    try:
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as e:  # no network, HTTP error, bad hash, truncated file, ...
        file_name = weights.url.rsplit("/", 1)[-1]
        target = f"{torch.hub.get_dir()}/checkpoints/{file_name}"
        raise ConfigError(
            f"resnet50: ImageNet weights (IMAGENET1K_V2) could not be fetched from {weights.url} "
            f"({type(e).__name__}: {e}). Download that file on a machine with internet access "
            f"and place it at {target} (the torch hub cache; set TORCH_HOME to move it), "
            "or use pretrained=False."
        ) from e


def _resnet50(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    pretrained: bool = False,
    weights_file: str | None = None,
) -> nn.Module:
    """ImageNet-stem ResNet-50; with ``pretrained`` the ImageNet weights (from ``weights_file``
    when given) except a new ``fc``."""
    model = _tvm().resnet50(weights=None)
    if weights_file is not None and not pretrained:
        raise ConfigError("resnet50: weights_file is given but pretrained is false")
    if pretrained:
        if in_channels not in (1, 3):
            raise ConfigError(
                f"resnet50: pretrained weights need in_channels 1 or 3, got {in_channels}"
            )
        model.load_state_dict(_load_imagenet_resnet50_weights(weights_file))
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if pretrained:
            # Summing the RGB filters is exactly the pretrained net applied to a grey image
            # replicated over three channels.
            with torch.no_grad():
                model.conv1.weight.copy_(old.weight.sum(dim=1, keepdim=True))
        else:
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if num_classes != model.fc.out_features or pretrained:
        # A fresh head: the ImageNet classifier is never meaningful for another label set.
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


# --- PreAct ResNet-18 -------------------------------------------------------------------------


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """Pre-activation basic block: x + conv(relu(bn(conv(relu(bn(x)))))).

    When the shape changes the shortcut is a 1x1 strided conv (no BN) applied to the
    pre-activated input, as in He et al. 2016 ("Identity Mappings in Deep Residual Networks").
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + skip


PREACT_STYLES = ("arazo2019", "he2016")


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 for 32x32 inputs: 3x3 stem, stages 64/128/256/512 of two PreActBlocks.

    Two styles differ only around the ends of the network (same block stack, same strides):

    - ``"arazo2019"`` (default): the network in Arazo et al.'s public code (PreResNet.py),
      which the MAP-D label-noise experiments build on: stem conv-BN-ReLU, and the last
      block's output goes straight to average pooling (no final BN-ReLU).
    - ``"he2016"``: the full pre-activation design of He et al. 2016: the stem is a bare conv
      (the first block pre-activates it) and a final BN-ReLU precedes pooling.

    Args:
        num_classes: number of output logits.
        in_channels: input channels.
        style: one of :data:`PREACT_STYLES`.
    """

    def __init__(self, *, num_classes: int, in_channels: int, style: str = "arazo2019") -> None:
        super().__init__()
        if style not in PREACT_STYLES:
            raise ConfigError(
                f"preact_resnet18: unknown style {style!r}; available: {', '.join(PREACT_STYLES)}"
            )
        self.style = style
        self.conv1 = _conv3x3(in_channels, 64)
        # Arazo: BN-ReLU on the stem output. He: BN-ReLU after the last block.
        self.bn = nn.BatchNorm2d(64 if style == "arazo2019" else 512)
        blocks: list[nn.Module] = []
        c = 64
        for i, w in enumerate((64, 128, 256, 512)):
            for j in range(2):
                blocks.append(PreActBlock(c, w, stride=2 if (i > 0 and j == 0) else 1))
                c = w
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)
        _init_conv(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> (B, num_classes) logits."""
        out = self.conv1(x)
        if self.style == "arazo2019":
            out = self.layers(F.relu(self.bn(out)))
        else:
            out = F.relu(self.bn(self.layers(out)))
        return self.linear(torch.flatten(self.pool(out), 1))


def _preact_resnet18(
    *, num_classes: int, in_channels: int, image_size: int, style: str = "arazo2019"
) -> nn.Module:
    return PreActResNet18(num_classes=num_classes, in_channels=in_channels, style=style)


# --- CIFAR ResNet-32 --------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    """Post-activation basic block of the CIFAR ResNets (He et al. 2016a, Sec. 4.2).

    ``shortcut="A"``: when the shape changes, the identity is subsampled by 2 and zero-padded
    in the channel dimension (no parameters). ``shortcut="B"``: 1x1 strided conv + BN.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride = stride
        self.pad = c_out - c_in
        self.proj: nn.Module | None = None
        if shortcut == "B" and (stride != 1 or c_in != c_out):
            self.proj = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out),
            )

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            return self.proj(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            # Channel padding split evenly on both sides, as in the original Torch code.
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._skip(x))


class ResNet32(nn.Module):
    """CIFAR ResNet-32 (He et al. 2016a): 3x3 conv (16) then 3 stages of 5 basic blocks with
    16/32/64 channels (stride 2 at the start of stages 2 and 3), global average pooling and a
    linear layer. 6n+2 layers with n = 5.

    The default ``shortcut="A"`` (parameter-free zero-padding identity) is the option He et al.
    used for their CIFAR experiments, giving the reported 0.46M parameters.

    Args:
        num_classes: number of output logits.
        in_channels: input channels.
        shortcut: ``"A"`` (zero-padded identity) or ``"B"`` (1x1 conv projection + BN).
        blocks_per_stage: n; 5 gives ResNet-32 (3 gives ResNet-20, 9 ResNet-56).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        shortcut: str = "A",
        blocks_per_stage: int = 5,
    ) -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ConfigError(f"resnet32: shortcut must be 'A' or 'B', got {shortcut!r}")
        self.conv1 = _conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        blocks: list[nn.Module] = []
        c = 16
        for i, w in enumerate((16, 32, 64)):
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(_BasicBlock(c, w, stride, shortcut))
                c = w
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        _init_conv(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> (B, num_classes) logits."""
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(self.pool(out), 1))


def _resnet32(
    *, num_classes: int, in_channels: int, image_size: int, shortcut: str = "A"
) -> nn.Module:
    return ResNet32(num_classes=num_classes, in_channels=in_channels, shortcut=shortcut)


# --- registry ---------------------------------------------------------------------------------

Builder = Callable[..., nn.Module]

_REGISTRY: dict[str, Builder] = {
    "small_cnn": _small_cnn,
    "resnet18_cifar": _resnet18_cifar,
    "resnet50_cifar": _resnet50_cifar,
    "resnet50": _resnet50,
    "preact_resnet18": _preact_resnet18,
    "resnet32": _resnet32,
}


def available_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def build_model(
    name: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs: Any
) -> nn.Module:
    """Build a freshly initialised model from the registry.

    Args:
        name: one of :func:`available_models`.
        num_classes: number of output logits (>= 1).
        in_channels: channels of the input images (>= 1).
        image_size: side length of the (square) inputs the model will see (>= 8).
        **kwargs: options of the specific model: ``width``/``depth``/``stem_width`` (small_cnn),
            ``pretrained`` / ``weights_file`` (resnet50), ``style`` (preact_resnet18),
            ``shortcut`` (resnet32).

    Returns:
        A module mapping float (B, in_channels, H, W) to float (B, num_classes) logits.
        Initialisation draws from torch's global RNG, so ``torch.manual_seed`` fixes it.

    Raises:
        ConfigError: unknown name, unknown option, or an out-of-range size.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    for key, value, low in (
        ("num_classes", num_classes, 1),
        ("in_channels", in_channels, 1),
        ("image_size", image_size, MIN_IMAGE_SIZE),
    ):
        if not _is_positive_int(value) or value < low:
            raise ConfigError(f"model {name!r}: {key} must be an int >= {low}, got {value!r}")
    try:
        return _REGISTRY[name](
            num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs
        )
    except TypeError as e:  # an option the builder does not take
        if "unexpected keyword argument" in str(e):
            raise ConfigError(f"model {name!r}: {e}") from e
        raise


# --- inference-time folding -------------------------------------------------------------------

# (conv, bn) attribute pairs in which ``bn`` is applied directly to ``conv``'s output in the
# module's forward; ``nn.Sequential`` chains are found from their order. PreAct blocks apply BN
# before the conv, so they have none.
# Keyed by the class's qualified name, so torchvision need not be imported to fold a small CNN.
_CONV_BN_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "torchvision.models.resnet.ResNet": (("conv1", "bn1"),),
    "torchvision.models.resnet.BasicBlock": (("conv1", "bn1"), ("conv2", "bn2")),
    "torchvision.models.resnet.Bottleneck": (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    f"{__name__}.ResNet32": (("conv1", "bn1"),),
    f"{__name__}._BasicBlock": (("conv1", "bn1"), ("conv2", "bn2")),
}


def _qualname(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and type(bn) is nn.BatchNorm2d
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm that directly follows a conv folded
    into that conv's weights and bias (``model`` itself is left untouched).

    In eval mode such a BN is a fixed per-channel affine map, so the copy computes the same
    function with one pass over each activation less (equal up to float rounding, ~1e-6
    relative). Used for the per-epoch recording pass, where it is a large part of the cost on
    CPU. Pairs are found in ``nn.Sequential`` chains and in the blocks listed in
    ``_CONV_BN_PAIRS``; any other BN is kept as it is.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if _foldable(module[i], module[i + 1]):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
        for conv_name, bn_name in _CONV_BN_PAIRS.get(_qualname(module), ()):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if _foldable(conv, bn):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    # the folded weights are fresh tensors: give them the layout the original weights had
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    if weight is not None and weight.is_contiguous(memory_format=torch.channels_last):
        folded = folded.to(memory_format=torch.channels_last)
    return folded
