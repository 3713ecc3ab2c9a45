"""Torch modules: the image encoder (exported as TorchScript), the tabular encoder, the
alignment projections, the fused classifier and the alignment losses.

The image encoder's forward takes what the stream client sends, so serving needs no Python
preprocessing: a uint8 batch [N, S, S, 3] of BGR object ROIs (channels last, as OpenCV
decodes them, resized by `crop_object_roi`), converted to float and normalised per image
(each channel to mean 0, std 1 over the image) inside the graph, so training, the exported
TorchScript file and Triton normalise alike. It returns (embedding [N, E], image_logit [N, 1]).

The fusion-stage modules are plain Linear/ReLU stacks whose weights are exported to
`fusion_weights.npz` and evaluated by numpy in `triton_models/oanet_fusion/core.py`; their
forward passes here mirror that file operation for operation (tests check the parity).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ENCODERS = ("compact", "compact-multiscale", "compact-array", "resnet18", "vgg16", "alexnet")
MIN_IMAGE_SIZE = {"compact": 32, "compact-multiscale": 32, "compact-array": 32, "resnet18": 32, "vgg16": 32,
                  "alexnet": 64}


@dataclass(frozen=True)
class Recipe:
    """The optimiser an encoder trains with unless flags say otherwise."""

    optimizer: str  # "sgd" | "adamw"
    lr: float
    weight_decay: float


# The paper's encoders get the paper's settings (section 4.1: SGD, lr 0.01, weight decay 5e-4).
# The compact CNN uses AdamW 2e-3, the setting it was made to learn with on `oanet synth` data
# (docs/benchmarks.md, "How the image branch was made to learn on CPU").
PAPER_RECIPE = Recipe("sgd", 0.01, 5e-4)
COMPACT_RECIPE = Recipe("adamw", 2e-3, 1e-4)
RECIPES = {"compact": COMPACT_RECIPE, "compact-multiscale": COMPACT_RECIPE, "compact-array": COMPACT_RECIPE,
           "resnet18": PAPER_RECIPE,
           "vgg16": PAPER_RECIPE, "alexnet": PAPER_RECIPE}
OPTIMIZERS = ("sgd", "adamw")


class GlobalMaxPool(nn.Module):
    """[N, C, H, W] -> [N, C], the strongest response of each channel anywhere in the image.

    A defect is a small local anomaly among many identical balls or pads: the max keeps it
    where a global average dilutes it. Measured on `oanet synth` data (docs/benchmarks.md), with
    the four-stage CNN of the time: with average pooling, average and max concatenated, or
    log-sum-exp pooling the same network stayed at chance; with the max alone it reached
    validation AUROC 0.84 (seed 0, no GridMask)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=(2, 3))


# The compact CNN's stages work at about this many pixels whatever the input size: a larger
# ROI goes through a strided first convolution (`stem_stride`).
COMPACT_TRUNK_SIZE = 96


def stem_stride(image_size: int) -> int:
    """Stride of the compact CNN's first convolution for an image_size px input: image_size / 96
    rounded, between 1 and 4 (96 px: 1; 192 px: 2; 448 px: 4)."""
    return max(1, min(4, round(image_size / COMPACT_TRUNK_SIZE)))


# Two stages: each position of the last map sees 29 x 29 px of a 192 px ROI (its receptive
# field), the size of a ball and its neighbours, so a small defect is a large share of the
# window the global max compares. With four stages (16-32-64-128, windows of 149 px: most of the
# ROI) the from-scratch CNN stayed at chance in 3 of 5 seeds even after two restarts; with these
# two stages each of the same 5 seeds learnt in its first attempt, from epoch 1-3
# (docs/benchmarks.md, "A CNN whose windows are the defect's size").
COMPACT_WIDTHS = (32, 64)


def compact_cnn(widths: tuple[int, ...] = COMPACT_WIDTHS, stride: int = 1, channels: int = 3) -> tuple[nn.Module, int]:
    """A small VGG-style CNN (two 3x3 conv + batch norm per stage, max-pool between stages), then
    the global max over the last map.

    With the default two stages: 66 k parameters and 0.22 GMAC at the 96 px trunk, against 11 M
    and 0.33 GMAC for ResNet-18. Trained from scratch on CPU it learns the synthetic object
    defects in a few epochs, where ResNet-18 stays at chance within the same budget
    (docs/benchmarks.md). The paper notes the same risk of large encoders on low-resolution
    crops (section 3.3).

    `stride` > 1 makes the first convolution a strided stem with a kernel of 2 x stride - 1
    (every input pixel feeds some output): the stem sees the ROI at full input resolution,
    where a thin scratch or a pin hole still has contrast, and the rest of the net costs what
    it costs at input / stride px."""
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        k = 3 if i or stride == 1 else 2 * stride - 1
        layers += [*_conv_block(channels, width, k, 1 if i else stride), nn.MaxPool2d(2)]
        channels = width
    return nn.Sequential(*layers, GlobalMaxPool()), channels


# The context path of "compact-multiscale": two more stages on the compact CNN's last map, so
# their positions see 133 px windows of a 192 px ROI (a stain, a missing ball among its
# neighbours), beside the 29 px windows of the two stages.
CONTEXT_WIDTHS = (96, 96)


def _conv_block(channels: int, width: int, first_kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(channels, width, first_kernel, stride=stride, padding=first_kernel // 2, bias=False),
        nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
    ]


class MultiScaleMax(nn.Module):
    """[N, C, H, W] -> [N, local + context channels]: the global max of the local stages' map
    (small windows: a pin hole, a scratch) beside the global max of a context path run on that
    map (large windows: a stain, a missing ball). The local max gives the onset its gradient from
    the first epoch, as in the two-stage CNN; the context path adds what a 29 px window cannot
    compare (docs/benchmarks.md, "A context path for the large defects")."""

    def __init__(self, local: nn.Module, context: nn.Module):
        super().__init__()
        self.local = local
        self.context = context
        self.pool = GlobalMaxPool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local(x)
        return torch.cat([self.pool(local), self.pool(self.context(local))], dim=1)


def multiscale_cnn(widths: tuple[int, ...] = COMPACT_WIDTHS, context_widths: tuple[int, ...] = CONTEXT_WIDTHS,
                   stride: int = 1) -> tuple[nn.Module, int]:
    """`compact_cnn`'s stages, globally max-pooled, plus a context path of `context_widths`
    stages (max-pool between them) on their last map, globally max-pooled too."""
    local, channels = compact_cnn(widths, stride)
    context: list[nn.Module] = []
    previous = channels
    for i, width in enumerate(context_widths):
        context += ([nn.MaxPool2d(2)] if i else []) + _conv_block(previous, width)
        previous = width
    return MultiScaleMax(nn.Sequential(*list(local)[:-1]), nn.Sequential(*context)), channels + previous


# The pitch search of `CellComparison`, as shares of the ROI side: an array of 4 to 16 cells across.
PITCH_RANGE = (1 / 16, 1 / 4)


def _peak(profile: torch.Tensor, low: int) -> torch.Tensor:
    """[N, L] autocorrelation over lags low - 1 .. low + L - 2 -> [N] lag of its highest interior
    value, refined to a fraction of a pixel by the parabola through it and its two neighbours."""
    index = torch.argmax(profile[:, 1:-1], dim=1, keepdim=True)
    a = profile.gather(1, index)
    b = profile.gather(1, index + 1)
    c = profile.gather(1, index + 2)
    curvature = a - 2 * b + c
    offset = torch.where(curvature < 0, 0.5 * (a - c) / curvature.clamp(max=-1e-12), torch.zeros_like(a))
    return (low + index + offset.clamp(-0.5, 0.5)).squeeze(1).float()


def shifted_grid(dx: torch.Tensor, dy: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[M] shifts -> the [M, h, w, 2] sampling grid of `F.affine_grid` (align_corners=False) for
    pure translations, built as its base grid plus the shift. The same numbers to the bit
    (x * 1 + y * 0 + dx is x + dx), without affine_grid's batched matrix product over every
    pixel, which cost an eighth of the served CNN's time per frame."""
    xs = torch.linspace(-1, 1, w, dtype=dx.dtype, device=dx.device) * (w - 1) / w
    ys = torch.linspace(-1, 1, h, dtype=dy.dtype, device=dy.device) * (h - 1) / h
    gx = (xs.view(1, 1, w) + dx.view(-1, 1, 1)).expand(-1, h, w)
    gy = (ys.view(1, h, 1) + dy.view(-1, 1, 1)).expand(-1, h, w)
    return torch.stack([gx, gy], dim=-1)


class CellComparison(nn.Module):
    """[N, C, H, W] normalised ROIs -> [N, C + 1, H, W]: the ROI plus how unlike its neighbouring
    cells each pixel is, for parts that repeat a cell (a BGA's balls, dies, an LED array).

    Cell-to-cell comparison is how AOI finds a defect in an array without a golden image: each
    image's pitch along x and y is the strongest lag of its autocorrelation (4 to 16 cells
    across, to a fraction of a pixel), the image is shifted by one pitch left, right, up and
    down, and the added channel is the smallest of the four absolute differences (summed over
    colour). A pixel of a normal cell matches at least one neighbour, so only what no neighbour
    repeats stands out: a missing ball, a bridge, a stain, a scratch across the mask; the array's
    edge, which differs from its outer neighbour only, does not. The CNN learns what of the rest
    (the pin-1 marker, a part with no repeat) is normal. Pure tensor operations, so the traced
    TorchScript graph computes it per image in Triton as in training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        grey = x.mean(dim=1)
        grey = grey - grey.mean(dim=(1, 2), keepdim=True)
        spectrum = torch.fft.rfft2(grey)
        correlation = torch.fft.irfft2(spectrum.real ** 2 + spectrum.imag ** 2, s=(h, w))
        low_x, high_x = max(2, int(w * PITCH_RANGE[0])), max(4, int(w * PITCH_RANGE[1]))
        low_y, high_y = max(2, int(h * PITCH_RANGE[0])), max(4, int(h * PITCH_RANGE[1]))
        pitch_x = _peak(correlation[:, 0, low_x - 1 : high_x + 1], low_x)
        pitch_y = _peak(correlation[:, low_y - 1 : high_y + 1, 0], low_y)
        # grid_sample's coordinates are in units of half the image side.
        tx, ty = 2 * pitch_x / w, 2 * pitch_y / h
        zero = torch.zeros_like(tx)
        repeated = x.repeat(4, 1, 1, 1)
        grid = shifted_grid(torch.cat([tx, -tx, zero, zero]), torch.cat([zero, zero, ty, -ty]), h, w)
        shifted = F.grid_sample(repeated, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        difference = (repeated - shifted).abs().sum(dim=1).reshape(4, n, h, w)
        # Channels last, as the uint8 NHWC input arrives: the convolutions keep the memory format
        # they get, and in the contiguous one a training step took 1.3-1.8x as long on CPU.
        return torch.cat([x, difference.amin(dim=0).unsqueeze(1)], dim=1).contiguous(memory_format=torch.channels_last)


def _backbone(name: str, image_size: int) -> tuple[nn.Module, int]:
    import torchvision

    if name == "compact":
        return compact_cnn(stride=stem_stride(image_size))
    if name == "compact-array":
        trunk, channels = compact_cnn(stride=stem_stride(image_size), channels=4)
        return nn.Sequential(CellComparison(), trunk), channels
    if name == "compact-multiscale":
        return multiscale_cnn(stride=stem_stride(image_size))
    if name == "resnet18":
        model = torchvision.models.resnet18(weights=None)
        dim = model.fc.in_features
        model.fc = nn.Identity()
        return model, dim
    if name == "vgg16":
        # VGG-16 with batch normalisation: the plain VGG-16 does not train from scratch with
        # SGD at lr 0.01 (no pretrained weights can be downloaded here).
        model = torchvision.models.vgg16_bn(weights=None)
        return nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 512
    if name == "alexnet":
        model = torchvision.models.alexnet(weights=None)
        return nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 256
    raise ValueError(f"unknown encoder {name!r}; expected one of {', '.join(ENCODERS)}")


# Floor of the per-image std in grey levels: a flat image (or channel) stays flat, not noise
# blown up to unit variance.
MIN_IMAGE_STD = 2.0


def per_image_normalise(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] float grey levels -> each image's channels to mean 0, std 1 (std floored at
    MIN_IMAGE_STD). A line's lighting and exposure drift shift and scale the whole ROI; a
    defect is a local change against the rest of its own image, which this keeps."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True).clamp_min(MIN_IMAGE_STD)
    return (x - mean) / std


def normalised_input(rois: torch.Tensor) -> torch.Tensor:
    """uint8 [N, S, S, 3] BGR ROIs -> float [N, 3, S, S], per image normalised: what every image
    network of the served graph reads."""
    return per_image_normalise(rois.permute(0, 3, 1, 2).float())


class ImageEncoder(nn.Module):
    """CNN backbone + embedding head + image-only head, on uint8 NHWC BGR input.

    `image_size` is the input side the net is built for (the compact CNN's stem stride
    follows it); the graph itself accepts any size of at least MIN_IMAGE_SIZE."""

    def __init__(self, name: str = "compact", embedding_dim: int = 64, image_size: int = COMPACT_TRUNK_SIZE):
        super().__init__()
        self.name = name
        self.backbone, feat_dim = _backbone(name, image_size)
        self.embed = nn.Linear(feat_dim, embedding_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.2), nn.Linear(embedding_dim, 1))

    # The argument is named like the Triton input tensor (core.ROI_INPUT): Triton's libtorch
    # backend matches config input names to the TorchScript forward's argument names.
    def forward(self, OBJECT_ROI: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: N803
        return self.encode(normalised_input(OBJECT_ROI))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding, image logit) of a `normalised_input` batch."""
        embedding = self.embed(self.backbone(x))
        return embedding, self.head(embedding)


class TabularEncoder(nn.Module):
    """MLP on [z-scored values (0 where missing), missing mask] -> tabular embedding."""

    def __init__(self, n_features: int, hidden: int = 64, out_dim: int = 32):
        super().__init__()
        self.fc1 = nn.Linear(2 * n_features, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(t)))


class AlignmentNet(nn.Module):
    """Tabular encoder + the two alignment projections (+ an auxiliary classifier, training only)."""

    def __init__(self, embedding_dim: int, n_features: int, tab_dim: int = 32, align_dim: int = 32, hidden: int = 64):
        super().__init__()
        self.tab = TabularEncoder(n_features, hidden, tab_dim)
        self.proj_img = nn.Linear(embedding_dim, align_dim)
        self.proj_tab = nn.Linear(tab_dim, align_dim)
        self.aux = nn.Linear(2 * align_dim, 1)

    def forward(self, e_std: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a_img = F.normalize(self.proj_img(e_std), dim=1, eps=1e-8)
        a_tab = F.normalize(self.proj_tab(self.tab(t)), dim=1, eps=1e-8)
        return a_img, a_tab, self.aux(torch.cat([a_img, a_tab], dim=1)).squeeze(1)


class FusedClassifier(nn.Module):
    """MLP on [refined features, logit(p_params), present fraction] -> fused logit."""

    def __init__(self, in_dim: int, hidden: int = 64):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.relu(self.fc1(x)))).squeeze(1)


def cosine_alignment_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean (1 - cosine similarity) of paired rows; 0 when every pair points the same way."""
    return (1.0 - F.cosine_similarity(a, b, dim=1, eps=1e-8)).mean()


def infonce_alignment_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP-style): row i of a matches row i of b, the other rows are negatives."""
    a = F.normalize(a, dim=1, eps=1e-8)
    b = F.normalize(b, dim=1, eps=1e-8)
    logits = a @ b.t() / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


ALIGN_LOSSES = {"cosine": cosine_alignment_loss, "infonce": infonce_alignment_loss}
