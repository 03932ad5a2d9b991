"""Reads PyTorch checkpoints into numpy arrays without torch and without running their code.

A file written by ``torch.save`` is a pickle whose tensors point at raw storage bytes kept
beside it. Unpickling it with ``pickle`` lets the file call any importable function, so this
reader resolves only the few globals that describe tensors (to local stand-ins; torch is
never imported) and refuses every other global before anything is called. Two container
formats exist, and both are read:

* zip (``torch.save`` since PyTorch 1.6): ``<prefix>/data.pkl`` is the object pickle; its
  persistent ids ``('storage', StorageType, key, location, numel)`` name the records
  ``<prefix>/data/<key>``, raw bytes in the byte order given by ``<prefix>/byteorder``
  (little endian when that record is absent, as in files from PyTorch < 1.10).
* legacy (PyTorch <= 1.5, or ``_use_new_zipfile_serialization=False``; the official
  CenterNet model zoo): consecutive pickles of the magic number, the protocol version (1001)
  and a sys-info dict; then the object pickle, with persistent ids
  ``('storage', StorageType, root_key, location, numel, view_metadata)``; then the list of
  storage keys; then, per key in that order, the element count as a little-endian int64 and
  the storage's raw bytes (always little endian: the writer converts).

Tensors are rebuilt from (storage, offset, shape, strides) into C-contiguous numpy copies,
so views, slices and tensors sharing a storage come back as independent arrays.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import importlib.util
import os
import pickle
import sys
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import ml_dtypes
import numpy as np
from etils import epath


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: missing, not from torch, corrupt, unsafe, unsupported."""


LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Containers that wrap a state dict, tried in this order when the file is not a bare one:
# xingyizhou/CenterNet saves {'epoch', 'state_dict'[, 'optimizer']}; others use 'model'.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
DATA_PARALLEL_PREFIX = "module."

# torch.<Name>Storage -> element dtype. Other storage names (complex, quantized) are
# recognised only to report an unsupported dtype.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


def load_state_dict(path: str | os.PathLike, *,
                    use_torch: bool | None = None) -> dict[str, np.ndarray]:
    """Reads the state dict of a ``torch.save`` file as numpy arrays.

    Accepts a bare state dict or one wrapped as ``{'state_dict': ...}`` (with any other
    entries, e.g. 'epoch', 'optimizer'), ``{'model_state_dict': ...}`` or ``{'model': ...}``.
    A leading ``module.`` (from DataParallel) is removed when every key has it.

    Args:
      path: a zip-format or legacy-format ``torch.save`` file (``.pth``, ``.pt``, ``.pkl``).
      use_torch: True reads with ``torch.load(path, map_location='cpu', weights_only=True)``
        (torch required); False with the built-in restricted reader (no torch needed; it
        also reads pickle protocols torch's weights-only loader rejects); None (default)
        uses torch when it is installed and the built-in reader otherwise. Both give
        identical arrays.

    Returns:
      {key: array} in the order stored, with each tensor's dtype (bfloat16 as
      ``ml_dtypes.bfloat16``), shape and values; int64 buffers such as
      ``num_batches_tracked`` included, 0-d tensors as 0-d arrays.

    Raises:
      CheckpointError: the file is missing, is not a torch checkpoint, is truncated or
        corrupt, needs a global outside the tensor allowlist (refused before anything runs),
        holds tensors of an unsupported dtype, or contains no state dict.
    """
    path = os.fspath(path)  # local, or in a bucket (gs://...)
    if not epath.Path(path).is_file():
        raise CheckpointError(f"{path}: no such file")
    if use_torch is None:
        use_torch = importlib.util.find_spec("torch") is not None
    if use_torch:
        return _load_with_torch(path)
    try:
        file = epath.Path(path).open("rb")
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read: {error}") from error
    with _problems_reported_for(path), file:
        head = file.read(512)
        file.seek(0)
        if head.startswith(b"PK\x03\x04"):
            return _read_zip(file)
        if head[257:262] == b"ustar":
            raise _Problem("a tar archive (the oldest torch.save format), which this reader "
                           "does not support")
        return _read_legacy(file)


class _Problem(Exception):
    """What is wrong with the file being read; `load_state_dict` adds the path."""


class _RefusedGlobal(_Problem):
    pass


@contextlib.contextmanager
def _problems_reported_for(path: str):
    """Turns any failure while reading ``path`` into a CheckpointError naming the file."""
    try:
        yield
    except CheckpointError:
        raise
    except _Problem as problem:
        raise CheckpointError(f"{path}: {problem}") from None
    except Exception as error:  # zipfile, pickle, struct...: all mean a damaged file
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint "
                              f"({type(error).__name__}: {error})") from error


# Stand-ins for the torch objects a checkpoint pickle refers to. Immutable, and a pickle's
# BUILD opcode (which would call __setstate__) is refused, so the checks made when they are
# created still hold when the arrays are copied out.

def _refuse_build(self, state):
    raise _Problem(f"a pickle that sets the state of a {type(self).__name__[1:]}")


@dataclasses.dataclass(frozen=True, slots=True)
class _StorageType:
    """``torch.<name>``, a storage class; ``dtype`` is None when unsupported."""
    name: str
    dtype: np.dtype | None
    __setstate__ = _refuse_build


@dataclasses.dataclass(frozen=True, slots=True)
class _Storage:
    """``numel`` elements from element ``offset`` of the raw storage ``key``."""
    key: str
    dtype: np.dtype
    offset: int
    numel: int
    __setstate__ = _refuse_build


@dataclasses.dataclass(frozen=True, slots=True)
class _Tensor:
    """A strided view (offset, shape, strides all in elements) into ``storage``."""
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    __setstate__ = _refuse_build


def _index(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Problem(f"invalid {what} {value!r} in a tensor record")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise _Problem(f"a tensor record whose storage is a {type(storage).__name__}")
    if not isinstance(size, tuple | list) or not isinstance(stride, tuple | list) or (
            len(size) != len(stride)):
        raise _Problem(f"a tensor record with size {size!r} and stride {stride!r}")
    return _Tensor(storage, _index(storage_offset, "storage offset"),
                   tuple(_index(n, "size") for n in size),
                   tuple(_index(s, "stride") for s in stride))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _Tensor:
    del requires_grad, backward_hooks  # training-time state, meaningless for weights
    if metadata:
        raise _Problem(f"a tensor with metadata {metadata!r}, which this reader does not "
                       "support")
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    del requires_grad, backward_hooks
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the tensor allowlist and refuses every other global.

    ``storage_for`` maps a persistent id to a `_Storage` (None: persistent ids are invalid).
    """

    def __init__(self, file, storage_for: Callable[[tuple], _Storage] | None = None):
        super().__init__(file, encoding="latin1")  # latin1: Python 2 pickles, as torch.load
        self._storage_for = storage_for

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        # torch.cuda.*Storage only in checkpoints from before PyTorch 0.4.
        if module in ("torch", "torch.cuda") and isinstance(name, str) and (
                name.endswith("Storage") and name.isidentifier()):
            return _StorageType(name, _STORAGE_DTYPES.get(name))
        raise _RefusedGlobal(
            f"refused to load the pickled global '{module}.{name}' (not on the allowlist of "
            "tensor-rebuilding globals; nothing from the file was executed). Only state dicts "
            "of plain tensors can be read; if you trust the file, re-save "
            "model.state_dict() with torch.save")

    def persistent_load(self, pid: Any) -> _Storage:
        if self._storage_for is None or not isinstance(pid, tuple) or not pid or (
                pid[0] not in ("storage", b"storage")):
            raise _Problem(f"unexpected persistent id {pid!r:.80}")
        storage_type = pid[1] if len(pid) > 1 else None
        if not isinstance(storage_type, _StorageType):
            raise _Problem(f"a storage of type {storage_type!r:.80}")
        if storage_type.dtype is None:
            supported = ", ".join(dtype.name for dtype in _STORAGE_DTYPES.values())
            raise _Problem(f"tensors of an unsupported dtype (torch.{storage_type.name}); "
                           f"supported: {supported}")
        return self._storage_for(pid)


def _storage_key(key: Any) -> str:
    if isinstance(key, bytes):
        key = key.decode("latin1")
    if not isinstance(key, str | int):
        raise _Problem(f"invalid storage key {key!r:.80}")
    return str(key)


# ---------------------------------------------------------------------------------------
# Containers.

def _read_zip(file) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise _Problem(f"corrupt or truncated zip archive ({error})") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise _Problem("not a PyTorch checkpoint: a zip archive without a single "
                           f"<prefix>/data.pkl record (records: {names[:8]})")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace")
            if byteorder not in ("little", "big"):
                raise _Problem(f"unknown byteorder record {byteorder!r}")

        storages: dict[str, _Storage] = {}

        def storage_for(pid: tuple) -> _Storage:
            if len(pid) != 5:
                raise _Problem(f"a zip-format storage id of length {len(pid)}: {pid!r:.80}")
            _, storage_type, key, _location, numel = pid
            key = _storage_key(key)
            if key not in storages:  # later references reuse the first, as torch.load does
                storages[key] = _Storage(key, storage_type.dtype, 0, _index(numel, "numel"))
            return storages[key]

        # read() checks the CRC, which a streaming unpickler stopping at STOP might skip.
        data_pkl = io.BytesIO(archive.read(pickles[0]))
        obj = _RestrictedUnpickler(data_pkl, storage_for).load()
        state_dict = _select_state_dict(obj, lambda value: isinstance(value, _Tensor))

        raw = {}
        for key in {t.storage.key for t in state_dict.values()}:
            storage = storages[key]
            info = archive.getinfo(f"{prefix}data/{key}")  # KeyError: reported as corrupt
            nbytes = storage.numel * storage.dtype.itemsize
            if info.file_size != nbytes:
                raise _Problem(f"record {info.filename} holds {info.file_size} bytes where "
                               f"{storage.numel} x {storage.dtype} = {nbytes} were expected")
            raw[key] = _decode(archive.read(info), storage.dtype, byteorder)
    return _to_arrays(state_dict, raw)


def _read_legacy(file) -> dict[str, np.ndarray]:
    file_size = os.fstat(file.fileno()).st_size
    if file_size == 0:
        raise _Problem("not a PyTorch checkpoint: the file is empty")
    try:
        magic = _RestrictedUnpickler(file).load()
    except _RefusedGlobal:
        if _first_byte_is_pickle_proto(file):
            raise  # a plain pickle that wants code run: say which global was refused
        magic = None
    except Exception:  # arbitrary bytes: any unpickling failure means "not ours"
        magic = None
    if magic != LEGACY_MAGIC_NUMBER or isinstance(magic, bool):
        raise _Problem("not a PyTorch checkpoint: neither a zip archive nor a legacy "
                       "torch.save file (no magic number)")
    version = _RestrictedUnpickler(file).load()
    if version != LEGACY_PROTOCOL_VERSION:
        raise _Problem(f"unsupported legacy protocol version {version!r}")
    sys_info = _RestrictedUnpickler(file).load()
    if not isinstance(sys_info, dict):
        raise _Problem(f"a legacy sys-info record of type {type(sys_info).__name__}")

    roots: dict[str, _Storage] = {}  # root key -> the whole storage as first referenced

    def storage_for(pid: tuple) -> _Storage:
        if len(pid) != 6:
            raise _Problem(f"a legacy storage id of length {len(pid)}: {pid!r:.80}")
        _, storage_type, root_key, _location, numel, view = pid
        root_key = _storage_key(root_key)
        if root_key not in roots:
            roots[root_key] = _Storage(root_key, storage_type.dtype, 0, _index(numel, "numel"))
        root = roots[root_key]
        if view is None:
            return root
        # A storage view (PyTorch < 1.0): (view_key, offset, size) in elements of the root.
        if not isinstance(view, tuple) or len(view) != 3:
            raise _Problem(f"invalid storage view {view!r:.80}")
        _, offset, size = view
        offset, size = _index(offset, "view offset"), _index(size, "view size")
        if offset + size > root.numel:
            raise _Problem(f"a storage view [{offset}, {offset + size}) of a storage of "
                           f"{root.numel} elements")
        return _Storage(root_key, root.dtype, offset, size)

    obj = _RestrictedUnpickler(file, storage_for).load()
    state_dict = _select_state_dict(obj, lambda value: isinstance(value, _Tensor))
    needed = {t.storage.key for t in state_dict.values()}

    keys = _RestrictedUnpickler(file).load()
    if not isinstance(keys, list):
        raise _Problem(f"a storage key list of type {type(keys).__name__}")
    raw = {}
    for key in map(_storage_key, keys):
        if key not in roots:
            raise _Problem(f"data for storage {key!r}, which no tensor refers to")
        root = roots[key]
        count = int.from_bytes(_read_exactly(file, 8, f"storage {key!r}"), "little",
                               signed=True)
        if count != root.numel:
            raise _Problem(f"storage {key!r} has {count} elements in the data but "
                           f"{root.numel} in the pickle")
        nbytes = count * root.dtype.itemsize
        if nbytes > file_size - file.tell():
            raise _Problem(f"truncated: storage {key!r} needs {nbytes} bytes, "
                           f"{file_size - file.tell()} are left")
        if key in needed:
            raw[key] = _decode(_read_exactly(file, nbytes, f"storage {key!r}"), root.dtype,
                               "little")
        else:
            file.seek(nbytes, os.SEEK_CUR)
    missing = needed - raw.keys()
    if missing:
        raise _Problem(f"truncated or corrupt: no data for storages {sorted(missing)}")
    return _to_arrays(state_dict, raw)


def _first_byte_is_pickle_proto(file) -> bool:
    file.seek(0)
    return file.read(1) == pickle.PROTO


def _read_exactly(file, nbytes: int, what: str) -> bytes:
    data = file.read(nbytes)
    if len(data) != nbytes:
        raise _Problem(f"truncated: {what} needs {nbytes} bytes, {len(data)} are left")
    return data


def _decode(data: bytes, dtype: np.dtype, byteorder: str) -> np.ndarray:
    """Raw storage bytes -> 1-D native-endian array (read-only, no copy when native)."""
    if byteorder == sys.byteorder or dtype.itemsize == 1:
        return np.frombuffer(data, dtype)
    # Swap via unsigned integers of the same width, which also covers ml_dtypes.bfloat16.
    order = "<" if byteorder == "little" else ">"
    bits = np.frombuffer(data, np.dtype(f"{order}u{dtype.itemsize}"))
    return bits.astype(f"=u{dtype.itemsize}").view(dtype)


# ---------------------------------------------------------------------------------------
# State dicts.

def _is_state_dict(obj: Any, is_tensor: Callable[[Any], bool]) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(key, str) and is_tensor(value) for key, value in obj.items())


def _select_state_dict(obj: Any, is_tensor: Callable[[Any], bool]) -> dict[str, Any]:
    """The state dict inside ``obj``, with the DataParallel prefix removed."""
    if not _is_state_dict(obj, is_tensor):
        if not isinstance(obj, Mapping):
            raise _Problem(f"no state dict found: the file holds a {type(obj).__name__}, "
                           "not a dict of tensors")
        inner = [obj[k] for k in STATE_DICT_KEYS if k in obj and _is_state_dict(obj[k], is_tensor)]
        if not inner:
            keys = list(obj)
            shown = ", ".join(map(repr, keys[:20])) + (", ..." if len(keys) > 20 else "")
            raise _Problem(f"no state dict found (a dict of tensors, bare or under one of "
                           f"{list(STATE_DICT_KEYS)}); top-level keys: [{shown}]")
        obj = inner[0]
    if all(key.startswith(DATA_PARALLEL_PREFIX) for key in obj):
        return {key[len(DATA_PARALLEL_PREFIX):]: value for key, value in obj.items()}
    return dict(obj)


def _to_arrays(state_dict: dict[str, _Tensor], raw: dict[str, np.ndarray]
               ) -> dict[str, np.ndarray]:
    return {key: _materialize(key, tensor, raw[tensor.storage.key])
            for key, tensor in state_dict.items()}


def _materialize(name: str, tensor: _Tensor, root: np.ndarray) -> np.ndarray:
    """Copies ``tensor``'s strided view out of its root storage ``root`` (1-D)."""
    storage = tensor.storage
    if storage.offset + storage.numel > root.size:
        raise _Problem(f"tensor {name!r}: storage view beyond its root storage")
    if 0 in tensor.shape:
        return np.zeros(tensor.shape, storage.dtype)
    # Bounds check: as_strided would otherwise read outside the buffer.
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.strides))
    if last >= storage.numel:
        raise _Problem(f"tensor {name!r} (offset {tensor.offset}, shape {tensor.shape}, "
                       f"strides {tensor.strides}) reaches beyond its storage of "
                       f"{storage.numel} elements")
    flat = root[storage.offset + tensor.offset: storage.offset + storage.numel]
    view = np.lib.stride_tricks.as_strided(
        flat, tensor.shape, tuple(s * flat.itemsize for s in tensor.strides), writeable=False)
    return view.copy()


# ---------------------------------------------------------------------------------------
# The torch path (a cross-check; needs torch).

def _load_with_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as error:
        raise ImportError("load_state_dict(use_torch=True) needs torch; use_torch=False reads "
                          "the file without it") from error
    try:
        with epath.Path(path).open("rb") as file:
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds; all mean "cannot read this file"
        raise CheckpointError(f"{path}: torch.load(weights_only=True) failed: "
                              f"{type(error).__name__}: {error} (use_torch=False reads it "
                              "without torch)") from error
    with _problems_reported_for(path):
        state_dict = _select_state_dict(obj, lambda value: isinstance(value, torch.Tensor))
        arrays = {}
        for key, tensor in state_dict.items():
            tensor = tensor.detach().cpu()
            if tensor.dtype == torch.bfloat16:
                bits = tensor.contiguous().view(torch.int16).numpy()
                arrays[key] = bits.view(ml_dtypes.bfloat16).copy()
            elif str(tensor.dtype).removeprefix("torch.") in (
                    dtype.name for dtype in _STORAGE_DTYPES.values()):
                arrays[key] = tensor.numpy().copy()
            else:
                raise _Problem(f"tensor {key!r} has the unsupported dtype {tensor.dtype}")
        return arrays
