"""Bias correction: int8 weights without the systematic shift their rounding adds.

Rounding a layer's weights to int8 changes its output by ``(Q(W) - W) . x``. Inputs after
ReLU are positive on average, so this error has a non-zero mean per output channel: a bias
that adds up through the network (Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction", ICCV 2019). Knowing how the converters round (per output
channel, symmetric, ``max|w| / 127``, after folding batch normalisation into the
convolution), the expected shift is ``sum (Q(W) - W) * E[x]`` with ``E[x]`` each input
channel's mean over the calibration data; subtracting it from the layer's bias (or its batch
normalisation's beta) removes it. The weights themselves are not changed, so they round the
same way; only the float bias moves, by a fraction of a quantization step.

Keras models only (functional, sequential, nested one in another): Conv2D, DepthwiseConv2D and
Dense layers, each with its BatchNormalization when one directly follows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

BATCH = 16


@dataclass
class Corrected:
    layers: int  # layers whose bias (or batch-norm beta) moved
    skipped: int  # weight layers left alone: no bias to move, or their input could not be probed


def _quantized(w: np.ndarray, levels: int = 127) -> np.ndarray:
    """Per-channel symmetric int8 rounding along the last axis to ``[-levels, levels]``, as the TFLite and
    ONNX Runtime quantizers do (127; ONNX Runtime's 7-bit ``reduce_range`` weights: 64)."""
    flat = w.reshape(-1, w.shape[-1])
    scale = np.abs(flat).max(axis=0) / levels
    scale[scale == 0] = 1.0
    return (np.clip(np.round(flat / scale), -levels, levels) * scale).reshape(w.shape)


def _targets(model):
    """(layer, following BatchNormalization or None) for every weight layer of ``model``, and nested models."""
    import keras

    weighted = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    layers = list(model.layers)
    out, nested = [], []
    for i, layer in enumerate(layers):
        if isinstance(layer, keras.Model):
            nested.append(layer)
        elif isinstance(layer, weighted) and not isinstance(layer, keras.layers.Conv2DTranspose):
            bn = None
            for later in layers[i + 1 :]:
                if isinstance(later, keras.layers.BatchNormalization) and _reads(later, layer):
                    bn = later
                    break
            out.append((layer, bn))
    return out, nested


def _reads(later, layer) -> bool:
    try:
        return later.input is layer.output
    except (AttributeError, ValueError):  # layers used more than once have no single input
        return False


def _called_with(model, sub):
    """The tensor of ``model``'s graph that ``sub`` (a model used as a layer) is called on."""
    import keras

    for node in sub._inbound_nodes:  # Keras keeps no public handle on a nested model's caller
        if len(node.input_tensors) == 1:
            try:
                keras.Model(model.inputs, node.input_tensors[0])
                return node.input_tensors[0]
            except ValueError:
                continue
    raise ValueError(f"{sub.name} is not called once on a single tensor")


def reaching(model, sub, xs: list[np.ndarray]) -> list[np.ndarray]:
    """What ``sub`` (a model used as a layer of ``model``) is fed when ``model`` runs on ``xs``."""
    import keras

    reach = keras.Model(model.inputs, _called_with(model, sub))
    batches = [
        reach([x[s : s + BATCH] for x in xs] if len(xs) > 1 else xs[0][s : s + BATCH], training=False)
        for s in range(0, len(xs[0]), BATCH)
    ]
    return [np.concatenate([np.asarray(b) for b in batches])]


def _fold_scale(bn, channels: int) -> np.ndarray:
    """The per-channel factor batch normalisation multiplies the kernel by when it is folded in."""
    if bn is None:
        return np.ones(channels)
    gamma = bn.gamma.numpy() if bn.scale else np.ones(channels)
    return gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)


def _delta(layer, bn, reduced_range: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(the rounding error of the folded kernel, divided back by the fold factor and in the layer's
    own kernel shape; the fold factor). Output channels are last; a depthwise kernel's
    (kh, kw, in, mult) flattens to channel ``i * mult + j``, as the converters lay it out."""
    kernel = np.asarray(layer.kernel.numpy(), np.float64)
    flat = kernel.reshape(*kernel.shape[:-2], -1) if kernel.ndim == 4 and _is_depthwise(layer) else kernel
    scale = _fold_scale(bn, flat.shape[-1])
    folded = flat * scale
    levels = 64 if reduced_range and not _is_depthwise(layer) else 127
    return ((_quantized(folded, levels) - folded) / scale).reshape(kernel.shape).astype(np.float32), scale


def _is_depthwise(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.DepthwiseConv2D)


def _shift_op(layer, delta: np.ndarray):
    """x -> the layer's linear op with ``delta`` as its kernel (no bias, no activation)."""
    import keras

    ops = keras.ops
    if _is_depthwise(layer):
        return lambda x: ops.depthwise_conv(
            x, delta, strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate
        )
    if isinstance(layer, keras.layers.Conv2D):
        return lambda x: ops.conv(
            x, delta, strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate
        )
    return lambda x: ops.matmul(x, delta)


def _apply(layer, bn, shift: np.ndarray) -> bool:
    if bn is not None and bn.center:
        bn.beta.assign((bn.beta.numpy() - shift).astype(np.float32))
        return True
    if bn is None and layer.use_bias:
        layer.bias.assign((layer.bias.numpy() - shift).astype(np.float32))
        return True
    return False


def _shifts(model, targets, inputs: list[np.ndarray], reduced_range: bool) -> list[np.ndarray]:
    """Each target's mean output shift per channel (over batch and positions) from int8 weight
    rounding, on ``inputs``: the layer's own op applied with the rounding error as its kernel to
    what the float model feeds it, so zero padding at the borders is counted exactly."""
    import keras

    probe = keras.Model(model.inputs, [layer.input for layer, _ in targets])
    ops = []
    for layer, bn in targets:
        delta, scale = _delta(layer, bn, reduced_range)
        ops.append((_shift_op(layer, delta), scale))
    sums = [np.zeros(scale.size) for _, scale in ops]
    count = [0] * len(ops)
    for start in range(0, len(inputs[0]), BATCH):
        batch = [x[start : start + BATCH] for x in inputs]
        outs = probe(batch if len(batch) > 1 else batch[0], training=False)
        for i, (x, (op, _)) in enumerate(zip(outs if isinstance(outs, (list, tuple)) else [outs], ops)):
            y = np.asarray(op(x), np.float64).reshape(-1, sums[i].size)
            sums[i] += y.sum(axis=0)
            count[i] += len(y)
    return [s / c * scale for s, c, (_, scale) in zip(sums, count, ops)]


def correct(model, inputs: list[np.ndarray], skip=None, reduced_range: bool = False) -> Corrected:
    """Move the biases of ``model`` (in place) to cancel int8 weight rounding's mean shift.

    ``inputs``: calibration inputs in the model's input order, batch first. Layers whose input
    cannot be probed (shared layers, subclassed models) are left as they are and counted, and
    so are the layers ``skip(name)`` names (those that will not be quantized). ``reduced_range``:
    the weights round to 7 bits (ONNX Runtime's ``reduce_range``, which the converter's ONNX
    artifacts use on x86-64 CPUs without VNNI), but for depthwise convolutions, which keep 8.
    """

    result = Corrected(0, 0)

    def visit(m, xs: list[np.ndarray]) -> None:
        targets, nested = _targets(m)
        if skip is not None:
            result.skipped += sum(1 for layer, _ in targets if skip(layer.name))
            targets = [(layer, bn) for layer, bn in targets if not skip(layer.name)]
        try:
            shifts = _shifts(m, targets, xs, reduced_range) if targets else []
        except Exception as e:  # noqa: BLE001 - an optional refinement: a layer it cannot probe stays as it is
            log.info("bias correction skipped %s (%s)", m.name, str(e).splitlines()[0][:120])
            result.skipped += len(targets)
            return
        for (layer, bn), shift in zip(targets, shifts):
            if _apply(layer, bn, shift):
                result.layers += 1
            else:
                result.skipped += 1
        for sub in nested:  # a nested model's own layers, fed with what reaches it
            try:
                arrays = reaching(m, sub, xs)
            except Exception as e:  # noqa: BLE001 - an optional refinement: a layer it cannot probe stays as it is
                log.info("bias correction skipped %s (%s)", sub.name, str(e).splitlines()[0][:120])
                result.skipped += len(_targets(sub)[0])
                continue
            visit(sub, arrays)

    visit(model, inputs)
    return result
