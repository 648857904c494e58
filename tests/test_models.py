"""Tests for mapd.models: shapes, sizes, registry errors, trainability, determinism."""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mapd.errors import ConfigError
from mapd.models import available_models, build_model, fold_batchnorm

# (name, natural input size); resnet50 is the ImageNet-stem model.
NATURAL_SIZES = [
    ("small_cnn", 32),
    ("resnet18_cifar", 32),
    ("resnet50_cifar", 32),
    ("resnet50", 224),
    ("preact_resnet18", 32),
    ("resnet32", 32),
]

RESNET50_FILE = "resnet50-11ad3fa6.pth"  # torchvision's IMAGENET1K_V2 checkpoint name


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These models are tiny at test sizes; one thread avoids OpenMP barrier stalls that make
    2-thread runs on a busy 2-core machine many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_available_models_lists_registry() -> None:
    assert available_models() == sorted(name for name, _ in NATURAL_SIZES)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize(("name", "size"), NATURAL_SIZES)
def test_output_shape(name: str, size: int, in_channels: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=in_channels, image_size=size).eval()
    with torch.no_grad():
        out = model(torch.rand(2, in_channels, size, size))
    assert out.shape == (2, 7)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("name", "kwargs", "expected", "reference"),
    [
        # Exact counts pin the architecture; ``reference`` is the published size.
        ("resnet18_cifar", {}, 11_173_962, 11.17e6),
        ("preact_resnet18", {}, 11_171_274, 11.17e6),  # Arazo: stem BN, no final BN
        ("preact_resnet18", {"style": "he2016"}, 11_172_170, 11.17e6),  # final BN on 512 ch
        ("resnet32", {}, 464_154, 0.46e6),  # option A: parameter-free shortcuts
        ("resnet32", {"shortcut": "B"}, 466_906, None),  # + two 1x1 conv/BN projections
    ],
)
def test_parameter_counts(name: str, kwargs: dict, expected: int, reference: float | None) -> None:
    n = n_params(build_model(name, num_classes=10, **kwargs))
    if reference is not None:
        assert n == pytest.approx(reference, rel=0.01)
    assert n == expected


def test_small_cnn_works_on_8x8_digits() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    out = model(torch.rand(4, 1, 8, 8))  # train mode: BN sees 4 values per channel at 1x1
    assert out.shape == (4, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_small_cnn_width_option() -> None:
    narrow = build_model("small_cnn", num_classes=10, width=8)
    custom = build_model("small_cnn", num_classes=10, width=[16, 16, 16], depth=1)
    assert n_params(narrow) < n_params(build_model("small_cnn", num_classes=10))
    assert narrow.fc.in_features == 32
    assert custom.fc.in_features == 16
    assert custom(torch.rand(2, 3, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("not_a_model", {}, "unknown model 'not_a_model'; available: .*small_cnn"),
        ("small_cnn", {"colour": True}, "colour"),
        ("small_cnn", {"width": 0}, "width"),
        ("small_cnn", {"image_size": 4}, "image_size must be an int >= 8"),
        ("resnet32", {"num_classes": 0}, "num_classes"),
        ("resnet32", {"shortcut": "C"}, "shortcut"),
        ("preact_resnet18", {"style": "kuangliu"}, "style"),
        ("resnet50", {"in_channels": 2, "pretrained": True}, "in_channels 1 or 3"),
    ],
)
def test_bad_config_raises_config_error(name: str, kwargs: dict, match: str) -> None:
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises(ConfigError, match=match):
        build_model(name, **kwargs)


def test_small_cnn_overfits_tiny_batch() -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 3, 16, 16)
    y = torch.arange(16) % 4
    model = build_model("small_cnn", num_classes=4, image_size=16, width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.9


@pytest.mark.parametrize("name", ["small_cnn", "resnet18_cifar", "preact_resnet18", "resnet32"])
def test_same_seed_same_initial_weights(name: str) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(name, num_classes=10).state_dict()

    a, b, c = weights(1), weights(1), weights(2)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(
    ("name", "size"), [(n, 64 if n == "resnet50" else s) for n, s in NATURAL_SIZES]
)
def test_channels_last_and_bf16_autocast(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, image_size=size)
    x = torch.rand(2, 3, size, size)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)

    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(out, torch.tensor([0, 1]))
    assert out.shape == (2, 5)
    assert out.dtype == torch.bfloat16
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# BatchNorms a conv feeds directly, per model (PreAct blocks normalise before their convs).
FOLDABLE_BN = {
    "small_cnn": 7,
    "resnet18_cifar": 1 + 16 + 3,  # stem, 2 per block, 3 downsample shortcuts
    "resnet50_cifar": 1 + 48 + 4,
    "resnet50": 1 + 48 + 4,
    "preact_resnet18": 0,
    "resnet32": 1 + 30,
}


@pytest.mark.parametrize(
    ("name", "size"), [(n, 64 if n == "resnet50" else s) for n, s in NATURAL_SIZES]
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_fold_batchnorm_computes_the_same_function(
    name: str, size: int, channels_last: bool
) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, image_size=size)
    x = torch.rand(4, 3, size, size)
    model.train()
    with torch.no_grad():  # a few batches give the BNs non-trivial running statistics
        for _ in range(3):
            model(x * 2 + 0.5)
    for m in model.modules():  # and non-trivial affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)

    def n_bn(m: torch.nn.Module) -> int:
        return sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())

    assert n_bn(model) - n_bn(folded) == FOLDABLE_BN[name]
    assert model.training and not folded.training  # the original keeps its mode and weights
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    if channels_last:
        convs = [m for m in folded.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def test_cifar_stem_replaced() -> None:
    model = build_model("resnet18_cifar", num_classes=10, in_channels=1)
    conv = model.conv1
    assert (conv.in_channels, conv.out_channels) == (1, 64)
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
    assert conv.bias is None
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert model.fc.out_features == 10


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache under tmp_path; any download attempt fails (no network)."""

    def no_download(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(f"offline test: refused to fetch {url}")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "hub"


def test_resnet50_pretrained_unavailable_raises_config_error(hub_dir: Path) -> None:
    with pytest.raises(ConfigError, match="could not be fetched") as info:
        build_model("resnet50", num_classes=10, image_size=224, pretrained=True)
    assert str(hub_dir / "checkpoints" / RESNET50_FILE) in str(info.value)


def test_resnet50_pretrained_loads_cached_weights(hub_dir: Path) -> None:
    torch.manual_seed(123)
    fake = build_model("resnet50", num_classes=1000, image_size=224).state_dict()
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(fake, hub_dir / "checkpoints" / RESNET50_FILE)

    torch.manual_seed(0)
    rgb = build_model("resnet50", num_classes=14, image_size=224, pretrained=True)
    grey = build_model("resnet50", num_classes=14, in_channels=1, image_size=224, pretrained=True)
    state = rgb.state_dict()
    for key, value in fake.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    assert rgb.fc.out_features == 14
    # A grey image through the summed filters == the same image replicated to RGB.
    torch.testing.assert_close(grey.conv1.weight, fake["conv1.weight"].sum(1, keepdim=True))
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(grey.conv1(x), rgb.conv1(x.expand(1, 3, 32, 32)))


def test_resnet50_weights_file_is_loaded_and_a_missing_one_named(
    tmp_path: Path, hub_dir: Path
) -> None:
    torch.manual_seed(7)
    fake = build_model("resnet50", num_classes=1000, image_size=224).state_dict()
    torch.save(fake, tmp_path / "r50.pth")
    model = build_model(
        "resnet50",
        num_classes=14,
        image_size=224,
        pretrained=True,
        weights_file=str(tmp_path / "r50.pth"),
    )
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], fake["layer1.0.conv1.weight"])
    assert not (hub_dir / "checkpoints").exists()  # the hub cache was never consulted
    with pytest.raises(ConfigError, match=r"weights_file .*absent\.pth' does not exist"):
        build_model(
            "resnet50",
            num_classes=14,
            image_size=224,
            pretrained=True,
            weights_file=str(tmp_path / "absent.pth"),
        )
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable state dict"):
        build_model(
            "resnet50",
            num_classes=14,
            image_size=224,
            pretrained=True,
            weights_file=str(tmp_path / "bad.pth"),
        )
