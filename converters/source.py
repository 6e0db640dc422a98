"""Loading the source model: Keras (.keras, legacy .h5), a SavedModel folder, or a float ONNX file.

A :class:`SourceModel` knows its inputs and outputs, runs the float reference
and hands the converters what they need: a SavedModel folder (TFLite) and a
float ONNX file (ONNX Runtime quantization).
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.manifest import sha256_file

from .errors import ConvertError

log = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_COMPILED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # Keras model -> its tf.function


def _compiled(model: Any) -> Any:
    """``model``'s forward pass as one ``tf.function`` (made once per model, traced once per input
    signature with relaxed shapes). Called a step at a time, as the streaming reference is, eager Keras
    spends most of each call outside the ops: measured on the speech-embedding phrase model's step,
    60 ms eager against 3.6 ms, with identical outputs."""
    fn = _COMPILED.get(model)
    if fn is None:
        import tensorflow as tf

        ref = weakref.ref(model)  # the function must not keep its own key alive

        def call(*xs: Any) -> Any:
            return ref()(list(xs) if len(xs) > 1 else xs[0], training=False)

        fn = _COMPILED[model] = tf.function(call, reduce_retracing=True)
    return fn


@dataclass
class IOSpec:
    name: str
    shape: list[int]  # batch dimension fixed to 1
    dtype: str = "float32"


@dataclass
class SourceModel:
    path: Path
    kind: str  # "keras" | "h5" | "savedmodel" | "onnx"
    sha256: str
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    keras_model: Any = None  # keras.Model for Keras sources
    _tf_fn: Any = None  # concrete function for SavedModel sources
    _ort: Any = None  # onnxruntime session for ONNX sources
    _workdir: Path | None = None
    _saved_model: Path | None = None
    _float_onnx: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_streaming(self) -> bool:
        """Explicit-state step model: inputs[1:] pair with outputs[1:] by shape."""
        if len(self.inputs) < 2 or len(self.inputs) != len(self.outputs):
            return False
        return all(i.shape == o.shape for i, o in zip(self.inputs[1:], self.outputs[1:]))

    # --- float reference ---------------------------------------------------
    def predict(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Float outputs for a batch (arrays in input order, batch first)."""
        if self.keras_model is not None:
            out = _compiled(self.keras_model)(*arrays)
            out = out if isinstance(out, (list, tuple)) else [out]
            return [np.asarray(o, dtype=np.float32) for o in out]
        if self._tf_fn is not None:
            import tensorflow as tf

            kwargs = {s.name: tf.constant(a) for s, a in zip(self.inputs, arrays)}
            res = self._tf_fn(**kwargs)
            return [np.asarray(res[s.name], dtype=np.float32) for s in self.outputs]
        res = self._ort.run([o.name for o in self.outputs], {s.name: a for s, a in zip(self.inputs, arrays)})
        return [np.asarray(r, dtype=np.float32) for r in res]

    # --- forms the converters need ---------------------------------------------
    def saved_model(self, workdir: Path) -> Path:
        """A SavedModel folder whose serving signature uses ``self.inputs`` names."""
        if self._saved_model is not None:
            return self._saved_model
        if self.kind == "onnx":
            raise ConvertError(
                f"{self.path}: --format tflite needs a Keras or SavedModel source; convert the ONNX "
                "model with --format onnx, or pass the Keras / SavedModel it came from"
            )
        if self.kind == "savedmodel":
            self._saved_model = self.path
            return self.path
        out = workdir / "saved_model"
        _quiet_tf()
        self.keras_model.export(str(out), verbose=False)
        self._saved_model = out
        return out

    def float_onnx(self, workdir: Path, opset: int = 17) -> Path:
        """The float ONNX model (the source itself for ONNX; tf2onnx otherwise)."""
        if self._float_onnx is not None:
            return self._float_onnx
        if self.kind == "onnx":
            self._float_onnx = self.path
            return self.path
        import tensorflow as tf
        import tf2onnx

        out = workdir / "float.onnx"
        sig = [tf.TensorSpec([None, *s.shape[1:]], tf.float32, name=s.name) for s in self.inputs]
        if self.keras_model is not None:
            model = self.keras_model
            fn = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
        else:
            names, outs, sig_fn = [s.name for s in self.inputs], [s.name for s in self.outputs], self._tf_fn
            fn = tf.function(lambda *xs: [sig_fn(**dict(zip(names, xs)))[o] for o in outs])
        try:
            tf2onnx.convert.from_function(fn, input_signature=sig, opset=opset, output_path=str(out))
        except Exception as e:  # tf2onnx raises many types
            raise ConvertError(
                f"{self.path}: tf2onnx could not convert this model to ONNX "
                f"({str(e).splitlines()[0][:200]}); try --format tflite"
            ) from None
        _rename_onnx_io(out, [s.name for s in self.inputs], [s.name for s in self.outputs])
        self._float_onnx = out
        return out


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def _rename_onnx_io(path: Path, inputs: list[str], outputs: list[str]) -> None:
    """Give the ONNX graph the same I/O names as the SavedModel signature."""
    import onnx

    m = onnx.load(str(path))
    renames = {}
    for vi, name in zip(m.graph.input, inputs):
        renames[vi.name] = name
    for vi, name in zip(m.graph.output, outputs):
        renames[vi.name] = name
    renames = {k: v for k, v in renames.items() if k != v}
    if not renames:
        return
    for node in m.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for vi in [*m.graph.input, *m.graph.output]:
        vi.name = renames.get(vi.name, vi.name)
    onnx.save(m, str(path))


def _fixed(shape: Any, where: str) -> list[int]:
    dims = list(shape)
    out = []
    for i, d in enumerate(dims):
        if d is None or (isinstance(d, str)) or (isinstance(d, int) and d < 0):
            if i == 0:
                out.append(1)
                continue
            raise ConvertError(
                f"{where}: input dimension {i} is dynamic; export the model with a fixed input "
                "shape (or pass --size H W for image models)"
            )
        out.append(int(d))
    return out


def _signature_name(name: str) -> str:
    return re.sub(r":\d+$", "", name)


def load_source(path: str | os.PathLike[str], size: tuple[int, int] | None = None) -> SourceModel:
    """Load SOURCE; bad files end in a ConvertError naming the file."""
    p = Path(path)
    if not p.exists():
        raise ConvertError(f"{p}: no such file or folder; pass a .keras, .h5, SavedModel folder or .onnx model")
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise ConvertError(f"{p}: folder is not a SavedModel (no saved_model.pb); pass a .keras, .h5 or .onnx file")
        return _load_savedmodel(p)
    suffix = p.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        return _load_keras(p, size)
    if suffix == ".onnx":
        return _load_onnx(p)
    raise ConvertError(
        f"{p}: unknown model format {suffix or '(no suffix)'!r}; pass a .keras, .h5, SavedModel folder or .onnx"
    )


def _load_keras(p: Path, size: tuple[int, int] | None) -> SourceModel:
    _quiet_tf()
    import keras

    try:
        model = keras.models.load_model(str(p), compile=False)
    except Exception as e:  # keras raises ValueError, OSError, TypeError... for corrupt files
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConvertError(
            f"{p}: cannot load this Keras model ({first}); check the file is complete and was saved with model.save()"
        ) from None
    if size is not None and model.inputs and len(model.inputs[0].shape) == 4:
        model = _with_input_size(model, size, p)
    inputs = [IOSpec(_signature_name(t.name), _fixed(t.shape, f"{p}")) for t in model.inputs]
    outputs = [IOSpec(f"output_{i}", [1, *[int(d) for d in t.shape[1:]]]) for i, t in enumerate(model.outputs)]
    kind = "h5" if p.suffix.lower() in (".h5", ".hdf5") else "keras"
    return SourceModel(p, kind, sha256_file(p), inputs, outputs, keras_model=model)


def _with_input_size(model: Any, size: tuple[int, int], p: Path) -> Any:
    """Rebuild a fully convolutional image model at another input size, sharing the weights."""

    shape = model.inputs[0].shape
    if tuple(shape[1:3]) == tuple(size):
        return model
    try:
        cfg = model.get_config()
        layer0 = cfg["layers"][0]["config"]
        key = "batch_shape" if "batch_shape" in layer0 else "batch_input_shape"
        layer0[key] = [None, size[0], size[1], shape[3]]
        _resize_nested(cfg, size)
        new = model.__class__.from_config(cfg)
        new.set_weights(model.get_weights())
        return new
    except Exception as e:
        raise ConvertError(
            f"{p}: --size {size[0]} {size[1]}: the model cannot be rebuilt at this input size "
            f"({str(e).splitlines()[0][:160]}); export it at the size you need"
        ) from None


def _resize_nested(cfg: dict, size: tuple[int, int]) -> None:
    for layer in cfg.get("layers", []):
        inner = layer.get("config", {})
        if layer.get("class_name") in ("Functional", "Model") and "layers" in inner:
            l0 = inner["layers"][0]["config"]
            for key in ("batch_shape", "batch_input_shape"):
                if key in l0 and l0[key] and len(l0[key]) == 4:
                    l0[key] = [None, size[0], size[1], l0[key][3]]
            _resize_nested(inner, size)


def _load_savedmodel(p: Path) -> SourceModel:
    _quiet_tf()
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(p))
        fn = loaded.signatures["serving_default"]
    except Exception as e:
        raise ConvertError(
            f"{p}: cannot load this SavedModel ({str(e).splitlines()[0][:200]}); it needs a 'serving_default' signature"
        ) from None
    _, kw = fn.structured_input_signature
    names = sorted(kw)
    inputs = [IOSpec(n, _fixed(kw[n].shape, f"{p} input {n}")) for n in names]
    outs = fn.structured_outputs
    out_names = sorted(outs, key=_natural_key)
    outputs = [IOSpec(n, [1, *[int(d) for d in outs[n].shape[1:]]]) for n in out_names]
    return SourceModel(p, "savedmodel", _tree_sha256(p), inputs, outputs, _tf_fn=fn, extra={"loaded": loaded})


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _tree_sha256(folder: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(x for x in folder.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def _load_onnx(p: Path) -> SourceModel:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise ConvertError(
            "onnx and onnxruntime are needed for ONNX sources; pip install 'edge-runtime[convert]'"
        ) from None
    try:
        model = onnx.load(str(p))
        onnx.checker.check_model(model)
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ConvertError(
            f"{p}: not a valid ONNX model ({str(e).strip().splitlines()[0][:200]}); re-export it"
        ) from None
    for init in model.graph.initializer:
        if init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and "quant" in init.name.lower():
            raise ConvertError(f"{p}: this ONNX model is already quantized; pass the float model")
    inputs = [IOSpec(i.name, _fixed(i.shape, f"{p} input {i.name}")) for i in sess.get_inputs()]
    outputs = [IOSpec(o.name, [1, *[d if isinstance(d, int) else 1 for d in o.shape[1:]]]) for o in sess.get_outputs()]
    return SourceModel(p, "onnx", sha256_file(p), inputs, outputs, _ort=sess)
