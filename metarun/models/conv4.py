"""Conv-4: four blocks of [3x3 conv with 64 filters, BatchNorm, ReLU, 2x2 max-pool].

The standard few-shot backbone since Vinyals et al. (2016), used by MAML (Finn et al. 2017) and
Prototypical Networks (Snell et al. 2017). With a head it is a classifier (MAML); without one it
is an embedding (ProtoNet): a 28x28 Omniglot image becomes a 64-d vector, 84x84 a 1600-d one.

MAML's own Omniglot network is not this one. Its code (``cbfinn/maml``: ``main.py`` flags
``max_pool=False``, ``num_filters=64``; ``utils.py`` ``conv_block``; ``maml.py``
``forward_conv``) downsamples with stride-2 'SAME' convolutions instead of max-pooling, averages
the last 2x2 map over space instead of flattening it, normalises with TensorFlow's
``batch_norm`` defaults (an offset but no scale, epsilon 1e-3), initialises convolutions Glorot-
uniform with zero biases and the head from N(0, 1); only its miniImageNet network max-pools (with
32 filters and a Glorot head on the flattened 5x5 map). ``downsample="stride"``,
``readout="mean"``, ``norm_scale=False``, ``norm_eps=1e-3``, ``init="glorot"`` and
``head_init="normal"`` give that network (``configs/network/maml_omniglot_conv4.yaml``). PyTorch's
symmetric padding of 1 gives the same map sizes as 'SAME' (28 -> 14 -> 7 -> 4 -> 2), shifted by
at most one pixel where TensorFlow pads only the bottom and right.

Relation Networks (Sung et al. 2018) compare feature maps rather than vectors: their encoder
max-pools after the first two blocks only, leaves those two unpadded, and keeps the spatial map
(``pool_blocks=2, padding=[0, 0, 1, 1], flatten=False``: 28x28 becomes 64x5x5, 84x84 64x19x19).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from metarun.errors import ConfigError
from metarun.models.norm import ChannelBias

DOWNSAMPLING = ("maxpool", "stride")
READOUTS = ("flatten", "mean")
INITS = ("pytorch", "glorot")
HEAD_INITS = ("pytorch", "glorot", "normal")
POOL_PADDINGS = ("valid", "same")
ACTIVATIONS = ("relu", "leaky_relu")


def conv_block(
    in_channels: int,
    out_channels: int,
    pool: bool = True,
    padding: int = 1,
    stride: int = 1,
    norm_scale: bool = True,
    norm_eps: float = 1e-5,
    pool_padding: str = "valid",
    activation: str = "relu",
) -> nn.Sequential:
    """3x3 conv (``stride``), BatchNorm (with a scale, or only an offset), ReLU (or leaky ReLU,
    slope 0.01), and a 2x2 max-pool when ``pool`` (``pool_padding="same"``: an odd map keeps its
    last row and column, as TensorFlow's 'SAME' pooling)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding, stride=stride)
    ]
    if norm_scale:
        layers.append(nn.BatchNorm2d(out_channels, eps=norm_eps))
    else:
        layers += [
            nn.BatchNorm2d(out_channels, eps=norm_eps, affine=False),
            ChannelBias(out_channels),
        ]
    layers.append(nn.ReLU() if activation == "relu" else nn.LeakyReLU(0.01))
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=pool_padding == "same"))
    return nn.Sequential(*layers)


def block_paddings(padding: int | Sequence[int], blocks: int) -> list[int]:
    """One padding per block: an int applies to all, a list gives each its own."""
    paddings = [padding] * blocks if isinstance(padding, int) else [int(p) for p in padding]
    if len(paddings) != blocks or any(p < 0 for p in paddings):
        raise ConfigError(
            "model.padding", f"must be an int >= 0 or a list of {blocks} of them, got {padding}"
        )
    return paddings


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"model.{key}", f"must be one of {', '.join(choices)}, got {value!r}")
    return value


class Conv4(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_features: int | None = None,
        hidden_channels: int = 64,
        blocks: int = 4,
        pool_blocks: int | None = None,
        padding: int | Sequence[int] = 1,
        flatten: bool = True,
        downsample: str = "maxpool",
        readout: str = "flatten",
        norm_scale: bool = True,
        norm_eps: float = 1e-5,
        init: str = "pytorch",
        head_init: str = "pytorch",
        pool_padding: str = "valid",
        activation: str = "relu",
    ) -> None:
        """``pool_blocks``: how many leading blocks halve the map (None: all); ``downsample``:
        how they halve it, a 2x2 max-pool or a stride-2 convolution; ``padding``: each conv's
        zero padding; ``readout``: the last map flattened or averaged over space;
        ``flatten=False`` returns ``[n, C, H, W]`` feature maps. ``norm_scale``/``norm_eps``:
        BatchNorm with or without a learned scale, and its epsilon; ``init``/``head_init``:
        PyTorch's default initialisation, Glorot-uniform weights with zero biases, or (head only)
        N(0, 1) weights; ``pool_padding``: "valid" floors odd maps (21 -> 10), "same" rounds
        up (21 -> 11); ``activation``: relu or leaky_relu (slope 0.01, MAML++'s code)."""
        super().__init__()
        pool_blocks = blocks if pool_blocks is None else pool_blocks
        if not 0 <= pool_blocks <= blocks:
            raise ConfigError("model.pool_blocks", f"must be in 0..{blocks}, got {pool_blocks}")
        check_choice("downsample", downsample, DOWNSAMPLING)
        check_choice("readout", readout, READOUTS)
        check_choice("init", init, INITS)
        check_choice("head_init", head_init, HEAD_INITS)
        check_choice("pool_padding", pool_padding, POOL_PADDINGS)
        check_choice("activation", activation, ACTIVATIONS)
        if out_features and not flatten:
            raise ConfigError("model.flatten", "a classifier head needs flatten=true")
        channels, height, width = input_shape
        layers = []
        for i, pad in enumerate(block_paddings(padding, blocks)):
            halve = i < pool_blocks
            stride = 2 if halve and downsample == "stride" else 1
            layers.append(
                conv_block(
                    channels if i == 0 else hidden_channels,
                    hidden_channels,
                    pool=halve and downsample == "maxpool",
                    padding=pad,
                    stride=stride,
                    norm_scale=norm_scale,
                    norm_eps=norm_eps,
                    pool_padding=pool_padding,
                    activation=activation,
                )
            )
            height = (height + 2 * pad - 3) // stride + 1
            width = (width + 2 * pad - 3) // stride + 1
            if halve and downsample == "maxpool":
                rounding = 1 if pool_padding == "same" else 0
                height, width = (height + rounding) // 2, (width + rounding) // 2
            if height < 1 or width < 1:
                raise ValueError(
                    f"{blocks} pooling blocks need inputs of at least {2**blocks} pixels"
                    if pool_blocks == blocks and padding == 1
                    else f"inputs of {input_shape[1]}x{input_shape[2]} vanish in block {i + 1}"
                )
        self.features = nn.Sequential(*layers)
        self.output_shape = (hidden_channels, height, width)
        self.readout = readout
        self.embedding_size = hidden_channels * (1 if readout == "mean" else height * width)
        self.flatten = flatten
        self.head = nn.Linear(self.embedding_size, out_features) if out_features else None
        initialise(self, init, head_init)

    def forward(self, x: Tensor) -> Tensor:
        z = self.features(x)
        if not self.flatten:
            return z
        z = z.mean((2, 3)) if self.readout == "mean" else z.flatten(1)
        return self.head(z) if self.head is not None else z


def initialise(model: Conv4, init: str, head_init: str) -> None:
    """Glorot-uniform weights and zero biases (TensorFlow's ``xavier_initializer``, as MAML's
    code), for the convolutions and the head separately; "pytorch" keeps torch's defaults."""
    with torch.no_grad():
        if init == "glorot":
            for module in model.features.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)
        if model.head is not None and head_init != "pytorch":
            if head_init == "glorot":
                nn.init.xavier_uniform_(model.head.weight)
            else:
                nn.init.normal_(model.head.weight, 0.0, 1.0)
            nn.init.zeros_(model.head.bias)
