"""The Inception-v3 of FID (TensorFlow's 2015-12-05 graph as ported by pytorch-fid).

The network is torchvision's Inception-v3 layout (module names as in its state
dict, so ``pt_inception-2015-12-05-6726825d.pth`` loads key for key) with the
three differences of the TensorFlow graph that FID was defined on:

* the average-pool branch of the A, C and E blocks ignores the zero padding
  (``count_include_pad=False``);
* the last E block (``Mixed_7c``) pools its pool branch with a max, not a mean;
* the classifier has 1008 classes (unused here: FID takes the 2048-d global
  average pool in front of it).

Input: ``[B, 3, H, W]`` float in ``[0, 1]``; bilinearly resized to 299×299
(``align_corners=False``) and mapped to ``[-1, 1]`` inside :meth:`forward`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inade.metrics.weights import INCEPTION, load_weights

FID_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008


class BasicConv2d(nn.Sequential):
    """Conv without bias, batch norm (eps 1e-3, TensorFlow's), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)
        self.relu = nn.ReLU(inplace=True)


def _pool_avg(x: Tensor) -> Tensor:
    # TensorFlow's average pool divides by the number of real (not padded) pixels.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _pool_max(x: Tensor) -> Tensor:
    return F.max_pool2d(x, 3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35×35 block: 1×1, 5×5, double 3×3 and pool branches."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_pool_avg(x))], 1)


class InceptionB(nn.Module):
    """35→17 reduction."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17×17 block with factorised 7×7 convolutions."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_pool_avg(x))], 1)


class InceptionD(nn.Module):
    """17→8 reduction."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8×8 block with split 1×3 / 3×1 outputs; ``pool`` is FID's average (7b) or max (7c)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = _pool_avg if pool == "avg" else _pool_max
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
            self.branch_pool(self.pool(x)),
        ], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as FID defines it; ``forward`` returns the 2048-d pool features ``[B, 2048]`` float32.

    Build with :func:`load_inception` to get the real weights; a bare instance has
    random weights (what the tests and the speed benchmark use). ``input_size`` other
    than 299 is not FID; it exists so tests can run the same network on small inputs.
    """

    def __init__(self, input_size: int = FID_SIZE):
        super().__init__()
        if input_size < 75:
            raise ValueError(f"Inception-v3 needs inputs of at least 75x75, got input_size={input_size}")
        self.input_size = input_size  # 299 for FID; smaller only to make tests fast
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg")
        self.Mixed_7c = InceptionE(2048, "max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)  # in the file; not used by FID
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: Tensor, *, resize: bool = True) -> Tensor:
        """``images [B, 3, H, W]`` in ``[0, 1]`` -> pool features ``[B, 2048]`` (float32)."""
        x = images.float()
        if resize:
            s = self.input_size
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean((2, 3)).float()


def load_inception(path=None, device="cpu") -> FIDInceptionV3:
    """The FID network with the weights of ``pt_inception-2015-12-05-6726825d.pth``.

    Args:
        path: the file (or a folder holding it); default ``$INADE_INCEPTION_WEIGHTS``.
    Raises:
        WeightsError: file missing, unreadable, or keys / shapes that are not that file's.
    """
    net = FIDInceptionV3()
    load_weights(net, path, INCEPTION)
    return net.to(device)
