"""ResNet-18/50 trunk with CBAM in every residual block, keys named like torchvision's.

The names (conv1, bn1, layer1..layer4, blockN.conv1/bn1/..., downsample.0/1) match torchvision's
ResNet so an ImageNet or MS-Celeb-1M ResNet state_dict maps onto this trunk key for key
(`fer_core.model.weights`); the CBAM modules are the only keys such a checkpoint lacks.
"""

from __future__ import annotations

from typing import Type

from torch import Tensor, nn

from fer_core.model.cbam import CBAM


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs; CBAM after the last BN, before the residual add (docs/method.md section 1)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cbam_reduction: int | None = 16) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.cbam = CBAM(planes, cbam_reduction) if cbam_reduction else None
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.cbam is not None:
            out = self.cbam(out)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here, as torchvision v1.5) -> 1x1 x4; CBAM after bn3, before the add."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cbam_reduction: int | None = 16) -> None:
        super().__init__()
        width = planes * self.expansion
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, width)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.cbam = CBAM(width, cbam_reduction) if cbam_reduction else None
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.cbam is not None:
            out = self.cbam(out)
        return self.relu(out + shortcut)


ARCHS: dict[str, tuple[Type[BasicBlock] | Type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


# The stem: what happens to the input before the first residual stage, and by how much it shrinks.
#   imagenet  conv7x7 stride 2 + maxpool 3x3 stride 2 (/4): torchvision's, for 224 px (the paper's
#             profile) and the only one whose conv1 takes ImageNet / MS-Celeb-1M weights;
#   small     conv3x3 stride 2, no maxpool (/2): for 48-64 px CPU profiles, where the ImageNet stem
#             would leave a 16x16 map before the first block and a 2x2 map at the end;
#   tiny      conv3x3 stride 1, no maxpool (/1): CIFAR-style, for inputs of 32 px and below.
STEMS: dict[str, tuple[int, int, bool]] = {  # name -> (kernel, stride, maxpool)
    "imagenet": (7, 2, True),
    "small": (3, 2, False),
    "tiny": (3, 1, False),
}


class ResNetTrunk(nn.Module):
    """A stem (`STEMS`) + four stages; returns the final feature map.

    No pooling and no classifier: the uncertainty heads decide how the map is pooled.
    """

    def __init__(self, arch: str = "resnet18", cbam_reduction: int | None = 16, stem: str = "imagenet") -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown model.arch {arch!r}; expected one of {', '.join(ARCHS)}")
        if stem not in STEMS:
            raise ValueError(f"unknown model.stem {stem!r}; expected one of {', '.join(STEMS)}")
        block, layers = ARCHS[arch]
        kernel, stride, maxpool = STEMS[stem]
        self.stem = stem
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if maxpool else nn.Identity()
        self.layer1 = self._make_layer(block, 64, layers[0], 1, cbam_reduction)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, cbam_reduction)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, cbam_reduction)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, cbam_reduction)
        self.out_channels = 512 * block.expansion
        self._init_weights()

    def _make_layer(self, block: Type[BasicBlock] | Type[Bottleneck], planes: int, blocks: int, stride: int,
                    cbam_reduction: int | None) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        stage = [block(self.inplanes, planes, stride, downsample, cbam_reduction)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes, 1, None, cbam_reduction) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self) -> None:
        # torchvision's initialisation, so a from-scratch run starts where the reference does.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # after the trunk's Kaiming init, which would otherwise saturate the attention gates
        for module in self.modules():
            if isinstance(module, CBAM):
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
