"""The served architectures: torchvision-compatible ResNet-50 keys and sizes, the MLP, and weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_pipeline.errors import ModelWeightsError, SpecError
from model_pipeline.models import MnistMLP, ResNet50, create_model, load_resnet50_weights


@pytest.fixture(scope="module")
def resnet() -> ResNet50:
    torch.manual_seed(0)
    return ResNet50().eval()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory, resnet: ResNet50) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(resnet.state_dict(), path)
    return path


def test_resnet50_has_torchvisions_320_keys_and_25_557_032_parameters(resnet: ResNet50) -> None:
    keys = list(resnet.state_dict())
    assert len(keys) == 320
    assert sum(p.numel() for p in resnet.parameters()) == 25_557_032
    assert keys[:6] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ]
    assert keys[-2:] == ["fc.weight", "fc.bias"]


def test_resnet50_block_layout_matches_torchvision(resnet: ResNet50) -> None:
    state = resnet.state_dict()
    # Only block 0 of each layer projects the shortcut; layer1 does too (64 -> 256 channels).
    projections = sorted({k.split(".downsample")[0] for k in state if ".downsample." in k})
    assert projections == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    blocks = {
        layer: len({k.split(".")[1] for k in state if k.startswith(layer + ".")})
        for layer in ("layer1", "layer2", "layer3", "layer4")
    }
    assert blocks == {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}
    # ResNet v1.5: the stride sits on the 3x3 conv of the first block of layers 2-4.
    assert resnet.layer2[0].conv2.stride == (2, 2) and resnet.layer2[0].conv1.stride == (1, 1)
    assert state["layer4.0.downsample.0.weight"].shape == (2048, 1024, 1, 1)
    assert not any(k.endswith("conv1.bias") for k in state)


def test_resnet50_maps_images_to_1000_logits(resnet: ResNet50) -> None:
    with torch.inference_mode():
        assert resnet(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


def test_mnist_mlp_is_784_128_10() -> None:
    model = MnistMLP()
    assert sum(p.numel() for p in model.parameters()) == 784 * 128 + 128 + 128 * 10 + 10
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_create_model_by_architecture() -> None:
    assert isinstance(create_model("mnist_mlp"), MnistMLP)
    assert isinstance(create_model("resnet50"), ResNet50)
    with pytest.raises(SpecError, match="architecture 'vgg16' is unknown; allowed: \\['mnist_mlp', 'resnet50'\\]"):
        create_model("vgg16")


def test_loads_a_torchvision_style_state_dict(resnet: ResNet50, weights_file: Path) -> None:
    torch.manual_seed(1)
    fresh = ResNet50().eval()
    load_resnet50_weights(fresh, weights_file)
    for key, value in resnet.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def _saved(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save(state, tmp_path / "w.pth")
    return tmp_path / "w.pth"


def test_missing_keys_are_named(resnet: ResNet50, tmp_path: Path) -> None:
    state = dict(resnet.state_dict())
    del state["layer3.2.bn2.running_var"]
    with pytest.raises(ModelWeightsError, match=r"1 missing keys \(first: layer3\.2\.bn2\.running_var\)"):
        load_resnet50_weights(ResNet50(), _saved(tmp_path, state))


def test_unexpected_keys_are_named(resnet: ResNet50, tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in resnet.state_dict().items()}  # a DataParallel checkpoint
    with pytest.raises(ModelWeightsError, match=r"320 unexpected keys \(first: module\.conv1\.weight"):
        load_resnet50_weights(ResNet50(), _saved(tmp_path, state))


def test_shape_mismatch_is_named(resnet: ResNet50, tmp_path: Path) -> None:
    state = dict(resnet.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(10, 2048), torch.zeros(10)
    with pytest.raises(ModelWeightsError, match=r"fc\.weight: shape \[10, 2048\] in file vs \[1000, 2048\]"):
        load_resnet50_weights(ResNet50(), _saved(tmp_path, state))


def test_missing_or_foreign_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelWeightsError, match="does not exist"):
        load_resnet50_weights(ResNet50(), tmp_path / "nope.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ModelWeightsError, match="is not a state_dict"):
        load_resnet50_weights(ResNet50(), tmp_path / "list.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ModelWeightsError, match="cannot be read"):
        load_resnet50_weights(ResNet50(), tmp_path / "junk.pth")
