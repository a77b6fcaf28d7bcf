"""The lecture's multilayer perceptron: 784 -> 100 (sigmoid) -> 10 logits; and, beside it, a small
conv net and torchvision's ResNet-18, built by name with build_model().

    model = MLP(num_features=784, num_hidden=100, num_classes=10)       # the lecture's
    model = build_model("cnn", channels=3, image_size=(64, 64), num_classes=5)
    model = build_model(ModelConfig(model="resnet18", channels=3, image_size=(64, 64)))

ModelConfig holds every setting that decides the network (as nanoGPT's GPTConfig): train.py fills it
from its flags and the data, and the checkpoint records it, so --resume, --evaluate and --predict
rebuild the same modules from the checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, Linear, Sigmoid, Linear. Returns logits (no softmax: cross-entropy applies it)."""

    def __init__(self, num_features: int = 784, num_hidden: int = 100,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),  # (B, C, H, W) -> (B, C*H*W)
            nn.Linear(num_features, num_hidden),
            nn.Sigmoid(),
            nn.Linear(num_hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, num_classes)


# ---- beyond the lecture: a conv net, ResNet-18, and one function that builds any of them ---------

def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (size kept), BatchNorm, ReLU. No bias: BatchNorm's shift replaces it."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """Three stages of conv-BN-ReLU blocks, halving the size between them, then global average
    pooling and one Linear layer: any channel count, any image size of at least 8x8."""

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn_relu(channels, w), conv_bn_relu(w, w), nn.MaxPool2d(2),  # (B, w, H/2, W/2)
            conv_bn_relu(w, 2 * w), conv_bn_relu(2 * w, 2 * w), nn.MaxPool2d(2),  # (B, 2w, H/4, W/4)
            conv_bn_relu(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),  # (B, 4w, 1, 1): the same head for every image size
            nn.Flatten(),
        )
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)


class Normalized(nn.Module):
    """`net` fed (x - mean) / std per channel, gray repeated to `repeat_to` channels first (for
    ImageNet weights). mean and std are buffers: the checkpoint carries them to --predict."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float],
                 repeat_to: int | None = None) -> None:
        super().__init__()
        self.net, self.repeat_to = net, repeat_to
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.repeat_to is not None and x.shape[1] == 1:
            x = x.expand(-1, self.repeat_to, -1, -1)  # (B, 1, H, W) -> (B, 3, H, W)
        return self.net((x - self.mean) / self.std)


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SMALL_STEM_BELOW = 64  # ResNet's stem shrinks the image 4x: below 64 pixels, keep the size


class PretrainedWeightsMissing(RuntimeError):
    """The pretrained weights are neither on disk nor downloadable (an offline machine)."""


def resnet18(channels: int, num_classes: int, image_size: tuple[int, int],
             pretrained: bool = False, load_weights: bool = True) -> nn.Module:
    """torchvision's ResNet-18 with a num_classes head. From scratch on images smaller than 64
    pixels on a side, the 7x7 stride-2 stem and its max pool become one 3x3 stride-1 conv (as for
    CIFAR), so a 28x28 digit is not shrunk to 7x7 before the first block. pretrained: the ImageNet
    weights (torchvision's stem kept, since the weights were learned with it), fed 3 channels and
    the ImageNet mean and std. load_weights=False: that model's modules, left as initialised
    (a checkpoint's weights go in next)."""
    from torchvision.models import ResNet18_Weights
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(num_classes=num_classes)
    if pretrained and channels not in (1, 3):  # 4 (RGBA): no weights learned for alpha
        raise ValueError(f"pretrained ResNet-18 takes gray (1 channel, repeated) or RGB (3) "
                         f"images, not {channels} channels: read them as RGB (transparency "
                         "laid over white), or train without pretrained weights")
    if pretrained:
        if load_weights:
            load_backbone(net, ResNet18_Weights.IMAGENET1K_V1)
        return Normalized(net, IMAGENET_MEAN, IMAGENET_STD, repeat_to=3 if channels == 1 else None)
    if min(image_size) < SMALL_STEM_BELOW:
        net.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif channels != 3:
        net.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
    return net


def load_backbone(net: nn.Module, weights) -> None:
    """torchvision's `weights` into net, all but its head (fc): read from
    $TORCH_HOME/hub/checkpoints/ when the file is there, else downloaded there. Read with
    weights_only=True, so a planted file cannot run code. The file must hold exactly ResNet-18's
    tensors (another ResNet's hold ResNet-18's names and more), all finite, and its sha256 must
    start with the prefix in its published name (torch.hub checks it only when it downloads).
    Otherwise, or offline without the file: PretrainedWeightsMissing, a sentence that names the
    file and what to do."""
    file = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    fix = (f"download {weights.url} on a machine that is online and put it at {file} (or set "
           "TORCH_HOME to the folder whose hub/checkpoints/ holds it)")
    if os.path.exists(file) and not os.path.isfile(file):  # a FIFO would block torch.load forever
        raise PretrainedWeightsMissing(f"{file} is not a regular file (a FIFO, folder or device): "
                                       f"remove it and {fix}")
    try:
        state = torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True,
                                                   weights_only=True, map_location="cpu")
    except OSError as e:  # urllib's URLError is an OSError: no network, or the host refused
        raise PretrainedWeightsMissing(f"the pretrained weights are not on this machine and could "
                                       f"not be downloaded ({e}): {fix}") from None
    except Exception as e:  # noqa: BLE001  (a damaged file: pickle, zip and EOF errors)
        raise PretrainedWeightsMissing(f"{file} is damaged or not a weights file "
                                       f"({type(e).__name__}): delete it and {fix}") from None
    backbone = {k: v.shape for k, v in net.state_dict().items() if not k.startswith("fc.")}
    problem = weights_problem(state, backbone, file)
    if problem is not None:
        raise PretrainedWeightsMissing(f"{file} {problem}: delete it and {fix}")
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)


def weights_problem(state: dict, backbone: dict[str, torch.Size], file: str) -> str | None:
    """What keeps `state` from being the published weights of a net whose tensors but the head's
    (fc) have these names and shapes: missing, extra or misshapen tensors, values that are not
    finite, a sha256 other than the one the file's name announces ("resnet18-f37072fd.pth":
    f37072fd...); None when nothing."""
    wrong = sorted(k for k in backbone if not (isinstance(state.get(k), torch.Tensor)
                                               and state[k].shape == backbone[k]))
    if wrong:
        return (f"does not hold ResNet-18's ImageNet weights ({len(wrong)} of {len(backbone)} "
                f"tensors missing or of another shape, such as {wrong[0]})")
    extra = sorted(k for k in state if k not in backbone and k not in ("fc.weight", "fc.bias"))
    if extra:
        return (f"holds {len(extra)} tensors ResNet-18 does not have, such as {extra[0]}: the "
                "weights of another network")
    bad = non_finite(state)
    if bad:
        more = f" and {len(bad) - 1} more tensors" if len(bad) > 1 else ""
        return f"holds NaN or infinite values, in {bad[0]}{more}"
    prefix = published_sha256_prefix(file)
    if prefix:
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if not digest.hexdigest().startswith(prefix):
            return (f"is not the published file: its sha256 begins {digest.hexdigest()[:12]}, "
                    f"the published one's {prefix}")
    return None


def non_finite(state: dict) -> list[str]:
    """The names of a state_dict's float tensors that hold NaN or an infinity."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not v.isfinite().all()]


def published_sha256_prefix(file: str) -> str:
    """The start of the file's sha256 that torchvision writes in its name, as torch.hub reads it:
    "resnet18-f37072fd.pth" -> "f37072fd"; "" for a name without one."""
    match = torch.hub.HASH_REGEX.search(os.path.basename(file))
    return match.group(1) if match else ""


MODELS = ("mlp", "cnn", "resnet18")


@dataclasses.dataclass
class ModelConfig:
    """What decides the network; each default is written here alone. image_size, channels and
    num_classes come from the data, mean and std from it with train.py --normalize; a train.py
    flag of the same name sets each of the others (--model, --hidden, --pretrained), and train.py
    takes a field added here from the checkpoint, records and compares it without more code."""
    image_size: tuple[int, int] = (28, 28)  # (H, W)
    channels: int = 1
    num_classes: int = 10
    model: str = "mlp"  # one of MODELS
    hidden: int = 100  # the MLP's hidden units
    pretrained: bool = False  # resnet18 from ImageNet's weights
    mean: list[float] | None = None  # per channel: inputs normalised inside the model
    std: list[float] | None = None

    @classmethod
    def from_checkpoint(cls, saved: dict) -> ModelConfig:
        """The model's part of a checkpoint's "config" (train.py's, which holds more keys). One of
        an earlier version has no "channels": it follows from num_features / (H * W)."""
        saved = dict(saved)
        missing = [k for k in ("image_size", "num_classes") if k not in saved]
        if missing:  # what the data gave: no default stands in for it
            raise KeyError(f"no {', '.join(missing)}")
        if "channels" not in saved:
            h, w = saved["image_size"]
            saved["channels"] = saved["num_features"] // (h * w)
        names = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in saved.items() if k in names})
        config.image_size = tuple(config.image_size)
        return config


# build_model's arguments before ModelConfig, which it still takes.
_OLD_CALL = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                 default=default)
                               for name, default in [
                                   ("name", inspect.Parameter.empty),
                                   ("channels", inspect.Parameter.empty),
                                   ("image_size", inspect.Parameter.empty),
                                   ("num_classes", inspect.Parameter.empty), ("hidden", 100),
                                   ("pretrained", False), ("load_weights", True), ("mean", None),
                                   ("std", None)]])


def _called_with(name, *args, **kwargs) -> tuple[ModelConfig, bool]:
    """(the ModelConfig, load_weights) of a build_model call, in either form."""
    if isinstance(name, ModelConfig):
        return name, inspect.signature(lambda load_weights=True: None).bind(
            *args, **kwargs).arguments.get("load_weights", True)
    values = _OLD_CALL.bind(name, *args, **kwargs)
    values.apply_defaults()
    values = dict(values.arguments)
    load_weights = values.pop("load_weights")
    return ModelConfig(model=values.pop("name"), **values), load_weights


def refuse_beyond_memory(what: str, nbytes: int, fix: str) -> None:
    """ValueError, a sentence, when `what` needs more bytes than this machine has memory: refused
    before torch tries to allocate it (a MemoryError, or the machine swapping to a halt)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): nothing to compare with
        return
    if nbytes > memory:
        raise ValueError(f"{what} would take {nbytes / 2**30:,.1f} GiB, more than this machine's "
                         f"{memory / 2**30:,.1f} GiB of memory: {fix}")


def build_model(name: ModelConfig | str, *args, **kwargs) -> nn.Module:
    """The network a ModelConfig describes, for images of (channels, *image_size):
    build_model(config, load_weights=True); or, as before ModelConfig, build_model(name, channels,
    image_size, num_classes, hidden=100, pretrained=False, load_weights=True, mean=None,
    std=None). pretrained (resnet18 only): ImageNet's weights, loaded unless load_weights is False
    (a checkpoint's weights go in next). The same config always builds the same modules."""
    config, load_weights = _called_with(name, *args, **kwargs)
    name, size = config.model, tuple(config.image_size)
    if name == "mlp":
        features = config.channels * size[0] * size[1]
        refuse_beyond_memory(f"an MLP on {config.channels}x{size[0]}x{size[1]} images (its "
                             f"{features:,} x {config.hidden} weights)",
                             4 * features * config.hidden, "pass a smaller --image-size or --hidden")
        net = MLP(num_features=features, num_hidden=config.hidden, num_classes=config.num_classes)
    elif name == "cnn":
        if min(size) < 8:
            raise ValueError(f"--model cnn needs images of at least 8x8, got {size[0]}x{size[1]}: "
                             "pass a larger --image-size")
        net = ConvNet(channels=config.channels, num_classes=config.num_classes)
    elif name == "resnet18":
        net = resnet18(config.channels, config.num_classes, size, config.pretrained, load_weights)
    else:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    if config.pretrained and name != "resnet18":
        raise ValueError(f"pretrained weights are for resnet18, not {name}")
    if config.mean is not None and config.std is not None:
        net = Normalized(net, config.mean, config.std)
    return net
