"""The served architectures in plain PyTorch: an MNIST MLP, and ResNet-50 with torchvision's state_dict keys.

ResNet-50 is written here (torchvision does not import with our CPU torch wheel) so that torchvision's
``.pth`` weights load unchanged: 320 state_dict keys and 25,557,032 parameters, as ``torchvision.models.resnet50``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from model_pipeline.errors import ModelWeightsError, SpecError

RESNET50_BLOCKS = (3, 4, 6, 3)
RESNET50_NUM_PARAMS = 25_557_032
RESNET50_NUM_STATE_KEYS = 320


class MnistMLP(nn.Module):
    """784-128-10 perceptron; input ``[B, 1, 28, 28]`` (flattened inside), output logits ``[B, 10]``."""

    def __init__(self, hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten(start_dim=1)
        self.fc1 = nn.Linear(28 * 28, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution, as in torchvision."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50 for 224x224 RGB input ``[B, 3, 224, 224]``; output logits ``[B, num_classes]``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, RESNET50_BLOCKS[0], stride=1)
        self.layer2 = self._make_layer(128, RESNET50_BLOCKS[1], stride=2)
        self.layer3 = self._make_layer(256, RESNET50_BLOCKS[2], stride=2)
        self.layer4 = self._make_layer(512, RESNET50_BLOCKS[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_planes = planes * Bottleneck.expansion
        # Block 0 of every layer changes the channel count (64 -> 256 in layer1 too), so it always projects.
        downsample = nn.Sequential(_conv1x1(self.in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))
        layers = [Bottleneck(self.in_planes, planes, stride, downsample)]
        self.in_planes = out_planes
        layers += [Bottleneck(out_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's initialisation, so a randomly initialised model behaves like torchvision's.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def create_model(architecture: str) -> nn.Module:
    """A freshly initialised model for a spec's ``architecture`` ("mnist_mlp" or "resnet50")."""
    builders = {"mnist_mlp": MnistMLP, "resnet50": ResNet50}
    if architecture not in builders:
        raise SpecError(f"architecture '{architecture}' is unknown; allowed: {sorted(builders)}")
    return builders[architecture]()


def _describe_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    expected = model.state_dict()
    problems = []
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {', '.join(missing[:5])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:5])})")
    for key, tensor in state.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            problems.append(f"{key}: shape {list(tensor.shape)} in file vs {list(expected[key].shape)}")
    return problems


def load_resnet50_weights(model: ResNet50, path: str | Path) -> ResNet50:
    """Load a torchvision ResNet-50 ``.pth`` state_dict into ``model``; keys and shapes must match exactly."""
    path = Path(path)
    if not path.is_file():
        raise ModelWeightsError(f"ResNet-50 weights file {path} does not exist")
    try:
        # weights_only: a .pth is a pickle, and only tensors may come out of a file we did not write.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike for a bad file
        raise ModelWeightsError(f"ResNet-50 weights file {path} cannot be read: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelWeightsError(f"{path} is not a state_dict (a mapping of names to tensors)")
    problems = _describe_mismatch(model, state)
    if problems:
        raise ModelWeightsError(f"{path} does not match torchvision's ResNet-50: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model
