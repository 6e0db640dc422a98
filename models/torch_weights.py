"""Read a PyTorch ``.pth`` state dict into numpy arrays, without torch.

Two on-disk layouts exist and both are read here:

* the zip layout (``torch.save`` since PyTorch 1.6): a zip archive holding
  ``<prefix>/data.pkl`` -- a pickle whose tensors are
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and
  whose storages are persistent ids ``('storage', StorageType, key, location,
  numel)`` naming raw little-endian bytes in ``<prefix>/data/<key>``;
* the legacy layout (before 1.6, ``_use_new_zipfile_serialization=False``): a
  stream of pickles -- magic number, protocol version, system info, the object
  pickle (persistent ids ``('storage', StorageType, key, location, numel,
  view)``), the list of storage keys -- followed by each storage as an int64
  element count and its raw bytes.

The unpickler is restricted: it resolves only the handful of torch and
collections names a state dict needs and refuses everything else, so reading
a weights file never runs code from it.

    from models.torch_weights import load_state_dict
    sd = load_state_dict("model.pth")   # {"conv_stem.weight": ndarray, ...}
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype (little-endian on disk unless the archive says otherwise)
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class TorchWeightsError(Exception):
    """A file that is not a readable PyTorch state dict; the message is one line."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        if self.name == "BFloat16Storage":
            return np.dtype("<u2")  # widened to float32 when a tensor is built
        return np.dtype("<" + STORAGE_DTYPES[self.name])


@dataclass
class _Storage:
    type: _StorageType
    key: str
    numel: int
    data: np.ndarray | None = None  # 1-D, filled from the archive
    view: tuple[str, int, int] | None = None  # legacy views: (root key, offset, size)


@dataclass
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.data
        if flat is None:
            raise TorchWeightsError(f"storage {self.storage.key} has no data")
        bf16 = self.storage.type.name == "BFloat16Storage"
        if not self.size:
            out = np.array(flat[self.offset])
        else:
            item = flat.itemsize
            view = np.lib.stride_tricks.as_strided(
                flat[self.offset :], shape=self.size, strides=tuple(s * item for s in self.stride), writeable=False
            )
            out = np.array(view)  # own, contiguous copy
        if bf16:
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out.astype(out.dtype.newbyteorder("="))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _Tensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _Tensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: BinaryIO, storages: dict[str, _Storage], where: str):
        super().__init__(f)
        self.storages = storages
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and (name in STORAGE_DTYPES or name == "BFloat16Storage"):
            return _StorageType(name)
        raise TorchWeightsError(
            f"{self.where}: refers to {module}.{name}, which a plain state dict does not "
            "contain; save the model's state_dict() instead"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise TorchWeightsError(f"{self.where}: unsupported persistent id {pid!r:.60}")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])  # pid[3]: the device it was saved from
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(stype, _StorageType):
            raise TorchWeightsError(f"{self.where}: storage {key} has unknown type {stype!r:.60}")
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = _Storage(stype, key, numel)
        if view is not None:  # legacy storage view: a slice of a root storage
            view_key, offset, size = view
            st = self.storages.get(str(view_key))
            if st is None:
                st = self.storages[str(view_key)] = _Storage(
                    stype, str(view_key), int(size), view=(key, int(offset), int(size))
                )
            return st
        return root


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return (
            type(obj)((k, _materialise(v)) for k, v in obj.items())
            if isinstance(obj, collections.OrderedDict)
            else {k: _materialise(v) for k, v in obj.items()}
        )
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _resolve_views(storages: dict[str, _Storage]) -> None:
    for st in storages.values():
        if st.view is not None:
            root_key, offset, size = st.view
            root = storages[root_key]
            if root.data is None:
                raise TorchWeightsError(f"storage view {st.key} refers to missing storage {root_key}")
            st.data = root.data[offset : offset + size]


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise TorchWeightsError(f"{path}: zip archive without */data.pkl; not a PyTorch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        order = "<"
        if prefix + "byteorder" in names:
            order = "<" if zf.read(prefix + "byteorder").decode().strip() == "little" else ">"
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(io.BytesIO(zf.read(pkl[0])), storages, str(path)).load()
        for key, st in storages.items():
            if st.view is not None:
                continue
            entry = f"{prefix}data/{key}"
            try:
                raw = zf.read(entry)
            except KeyError:
                raise TorchWeightsError(f"{path}: storage {entry} is missing from the archive") from None
            dt = st.type.dtype.newbyteorder(order)
            if len(raw) < st.numel * dt.itemsize:
                raise TorchWeightsError(f"{path}: storage {entry} is truncated")
            st.data = np.frombuffer(raw, dtype=dt, count=st.numel)
    _resolve_views(storages)
    return _materialise(obj)


def _load_legacy(path: Path) -> Any:
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            ImportError,
            UnicodeDecodeError,
        ):
            magic = None
        if magic != LEGACY_MAGIC:
            raise TorchWeightsError(f"{path}: neither a zip nor a legacy PyTorch checkpoint")
        protocol = pickle.load(f)
        if protocol != LEGACY_PROTOCOL:
            raise TorchWeightsError(f"{path}: legacy checkpoint protocol {protocol} is not supported")
        sys_info = pickle.load(f)
        little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
        order = "<" if little else ">"
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(f, storages, str(path)).load()
        keys = pickle.load(f)
        for key in keys:
            st = storages.get(str(key))
            if st is None:
                raise TorchWeightsError(f"{path}: storage {key} is listed but never used")
            header = f.read(8)
            if len(header) != 8:
                raise TorchWeightsError(f"{path}: truncated at storage {key}")
            (numel,) = struct.unpack(order + "q", header)
            dt = st.type.dtype.newbyteorder(order)
            raw = f.read(numel * dt.itemsize)
            if len(raw) != numel * dt.itemsize:
                raise TorchWeightsError(f"{path}: truncated at storage {key}")
            st.data = np.frombuffer(raw, dtype=dt)
    _resolve_views(storages)
    return _materialise(obj)


def load(path: str | Path) -> Any:
    """The unpickled object of a ``.pth`` file, with every tensor as a numpy array."""
    path = Path(path)
    if not path.is_file():
        raise TorchWeightsError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    return _load_legacy(path)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """``{name: ndarray}`` of a state-dict checkpoint (also unwraps ``{"state_dict": ...}``)."""
    obj = load(path)
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        raise TorchWeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    out = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not out:
        raise TorchWeightsError(f"{path}: state dict has no tensors")
    return out
