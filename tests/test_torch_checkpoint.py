"""torch_checkpoint: exact reads of real torch files, container handling, refusal of code.

The files under fixtures/torch/ were written by real torch (make_fixtures.py there); the
edge cases below are built without torch by `_save`, a pickler that writes the same globals
and persistent ids torch does.
"""

import collections
import dataclasses
import importlib.machinery
import importlib.util
import io
import os
import pathlib
import pickle
import pickletools
import sys
import types
import zipfile

import ml_dtypes
import numpy as np
import pytest

from centernet_jax import torch_checkpoint
from centernet_jax.torch_checkpoint import CheckpointError, load_state_dict

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "torch"


def _read(path, **kwargs):
    """The restricted reader, whether or not torch is installed."""
    return load_state_dict(path, **{"use_torch": False, **kwargs})


REAL_CHECKPOINTS = ["zip_checkpoint.pth", "legacy_checkpoint.pth", "bare_state_dict.pkl"]


def _expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "expected.npz") as npz:
        bfloat16_keys = set(npz["__bfloat16_keys__"].tolist())
        return {key: npz[key].view(ml_dtypes.bfloat16) if key in bfloat16_keys else npz[key]
                for key in npz.files if key != "__bfloat16_keys__"}


@pytest.mark.parametrize("name", REAL_CHECKPOINTS)
def test_real_torch_files_read_exactly(name):
    expected = _expected()
    torch_was_imported = "torch" in sys.modules
    arrays = _read(FIXTURES / name)
    assert ("torch" in sys.modules) == torch_was_imported
    assert list(arrays) == list(expected)  # stored order, 'module.' removed
    for key, want in expected.items():
        got = arrays[key]
        assert (got.dtype, got.shape) == (want.dtype, want.shape), key
        assert got.tobytes() == want.tobytes(), key  # bit-exact, NaN-safe
        assert got.flags.c_contiguous and got.flags.writeable, key
    assert arrays["bn.num_batches_tracked"].dtype == np.int64
    assert arrays["bn.num_batches_tracked"].shape == () and arrays["bn.num_batches_tracked"] == 7
    np.testing.assert_array_equal(arrays["view.transposed"], arrays["view.base"].T)
    np.testing.assert_array_equal(arrays["view.sliced"], arrays["view.base"][1:, ::2])
    # Tensors that shared a storage come back as independent arrays.
    arrays["shared.first"][...] = -1
    np.testing.assert_array_equal(arrays["shared.second"], np.arange(6, 12).reshape(3, 2))


def test_model_container_with_mixed_prefixes_keeps_keys():
    arrays = _read(FIXTURES / "model_container.pth")
    # Only one key has 'module.', so nothing is stripped; 'optimizer' is ignored.
    assert list(arrays) == ["module.linear.weight", "linear.bias"]
    assert arrays["module.linear.weight"].shape == (2, 3)


def test_unsupported_dtype_is_named():
    with pytest.raises(CheckpointError, match=r"unsupported_dtype\.pth: .*unsupported dtype "
                       r"\(torch\.ComplexFloatStorage\)"):
        _read(FIXTURES / "unsupported_dtype.pth")


def test_use_torch_without_torch_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ImportError, match="needs torch"):
        load_state_dict(FIXTURES / "zip_checkpoint.pth", use_torch=True)


def test_default_without_torch_uses_the_restricted_reader(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    arrays = load_state_dict(FIXTURES / "legacy_checkpoint.pth")
    assert arrays["bn.num_batches_tracked"] == 7


class _FakeTensor:
    """Just what `load_state_dict` uses of a torch.Tensor."""

    def __init__(self, array):
        self.array = array
        self.dtype = f"torch.{array.dtype.name}"

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


def test_default_with_torch_uses_weights_only_load(monkeypatch):
    calls = []

    def fake_load(file, map_location=None, weights_only=False):
        # An open file (so that bucket paths load too), named after the checkpoint.
        calls.append((os.path.basename(file.name), map_location, weights_only))
        return {"epoch": 2, "state_dict": collections.OrderedDict(
            [("module.a.weight", _FakeTensor(np.ones((2, 3), np.float32))),
             ("module.a.num_batches_tracked", _FakeTensor(np.array(5, np.int64)))])}

    fake_torch = types.ModuleType("torch")
    fake_torch.__spec__ = importlib.machinery.ModuleSpec("torch", None)
    fake_torch.Tensor, fake_torch.bfloat16, fake_torch.load = _FakeTensor, object(), fake_load
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    arrays = load_state_dict(FIXTURES / "zip_checkpoint.pth")
    assert calls == [("zip_checkpoint.pth", "cpu", True)]  # never an unrestricted unpickle
    assert list(arrays) == ["a.weight", "a.num_batches_tracked"]
    np.testing.assert_array_equal(arrays["a.weight"], np.ones((2, 3)))


# ---------------------------------------------------------------------------------------
# Files built without torch: `_save` writes torch's globals and persistent ids.

@dataclasses.dataclass(eq=False)
class _Storage:
    key: str
    data: np.ndarray  # 1-D
    type_name: str = "FloatStorage"
    view: tuple | None = None  # legacy storage view (view_key, offset, size)


class _Tensor:
    def __init__(self, storage, offset, size, stride, rebuild="v2", state=None):
        self.args = (storage, offset, tuple(size), tuple(stride))
        self.rebuild, self.state = rebuild, state

    def __reduce__(self):
        hooks = collections.OrderedDict()
        if self.rebuild == "v1":
            return _fake_global("torch._utils", "_rebuild_tensor"), self.args
        reduced = (_fake_global("torch._utils", "_rebuild_tensor_v2"),
                   self.args + (False, hooks))
        if self.state is not None:
            reduced += (self.state,)
        if self.rebuild == "parameter":
            return _fake_global("torch._utils", "_rebuild_parameter"), (
                _Tensor(*self.args), False, hooks)
        return reduced


class _Payload:
    """Unpickling this calls ``function(*args)``."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _fake_global(module: str, name: str) -> type:
    """A class that pickles as the global ``module.name`` (which need not be importable)."""
    return type(name, (), {"__module__": module, "_fake_global": True})


def _save(path, obj, fmt: str = "zip", byteorder: str = "little") -> pathlib.Path:
    """Writes ``obj`` (with `_Tensor`s) as torch.save would, in the zip or legacy format."""
    storages = {}

    class Pickler(pickle._Pickler):  # the pure-Python pickler lets save_global be replaced
        def persistent_id(self, obj):
            if not isinstance(obj, _Storage):
                return None
            storages[obj.key] = obj
            pid = ("storage", _fake_global("torch", obj.type_name), obj.key, "cpu",
                   obj.data.size)
            return pid + (obj.view,) if fmt == "legacy" else pid

        def save_global(self, obj, name=None):
            if vars(obj).get("_fake_global") if isinstance(obj, type) else False:
                self.write(pickle.GLOBAL + f"{obj.__module__}\n{obj.__name__}\n".encode())
            else:
                super().save_global(obj, name)

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    order = "<" if byteorder == "little" else ">"
    raw = {key: s.data.astype(s.data.dtype.newbyteorder(order)).tobytes()
           for key, s in storages.items()}
    path = pathlib.Path(path)
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", buffer.getvalue())
            archive.writestr("archive/byteorder", byteorder)
            for key, data in raw.items():
                archive.writestr(f"archive/data/{key}", data)
            archive.writestr("archive/version", "3\n")
    elif fmt == "legacy":
        with open(path, "wb") as file:
            for header in (torch_checkpoint.LEGACY_MAGIC_NUMBER,
                           torch_checkpoint.LEGACY_PROTOCOL_VERSION,
                           {"protocol_version": 1001, "little_endian": True}):
                pickle.dump(header, file, protocol=2)
            file.write(buffer.getvalue())
            pickle.dump(sorted(raw), file, protocol=2)
            for key in sorted(raw):
                file.write(storages[key].data.size.to_bytes(8, "little") + raw[key])
    else:  # a plain pickle
        path.write_bytes(buffer.getvalue())
    return path


def _ramp(key="0", n=12, dtype=np.float32, **kwargs) -> _Storage:
    return _Storage(key, np.arange(n, dtype=dtype), **kwargs)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("rebuild", ["v1", "v2", "parameter"])
def test_all_tensor_rebuild_functions(tmp_path, fmt, rebuild):
    storage = _ramp()
    state = {"a": _Tensor(storage, 2, (2, 3), (1, 2), rebuild=rebuild)}
    arrays = _read(_save(tmp_path / "c.pth", state, fmt))
    np.testing.assert_array_equal(arrays["a"], [[2, 4, 6], [3, 5, 7]])


@pytest.mark.parametrize("dtype, type_name", [(np.float32, "FloatStorage"),
                                              (np.float16, "HalfStorage"),
                                              (np.int64, "LongStorage")])
def test_big_endian_zip(tmp_path, dtype, type_name):
    storage = _ramp(dtype=dtype, type_name=type_name)
    path = _save(tmp_path / "c.pth", {"a": _Tensor(storage, 0, (3, 4), (4, 1))},
                 byteorder="big")
    arrays = _read(path)
    assert arrays["a"].dtype == np.dtype(dtype) and arrays["a"].dtype.isnative
    np.testing.assert_array_equal(arrays["a"], np.arange(12).reshape(3, 4))


def test_legacy_storage_view(tmp_path):
    # PyTorch < 1.0 could save a tensor on a view (offset 4, 6 elements) of a root storage.
    view = _Storage("root", np.arange(12, dtype=np.float32), view=("view", 4, 6))
    path = _save(tmp_path / "c.pth", {"a": _Tensor(view, 1, (2, 2), (3, 1))}, "legacy")
    np.testing.assert_array_equal(_read(path)["a"], [[5, 6], [8, 9]])


TENSOR = "<tensor>"  # replaced by a 0-d tensor


@pytest.mark.parametrize("container, keys", [
    ({"epoch": 3, "state_dict": {"module.x": TENSOR, "module.y": TENSOR}}, ["x", "y"]),
    ({"model": {"module.module.x": TENSOR}}, ["module.x"]),  # one DataParallel level only
    ({"model_state_dict": {"x": TENSOR, "module.y": TENSOR}}, ["x", "module.y"]),
    ({"model": {"m": TENSOR}, "state_dict": {"s": TENSOR}}, ["s"]),  # state_dict first
    ({"z": TENSOR, "module.b": TENSOR, "a": TENSOR}, ["z", "module.b", "a"]),  # bare
])
def test_containers_and_prefixes(tmp_path, container, keys):
    storage = _ramp()

    def fill(obj):
        if isinstance(obj, dict):
            return {k: fill(v) for k, v in obj.items()}
        return _Tensor(storage, 0, (), ()) if obj == TENSOR else obj

    arrays = _read(_save(tmp_path / "c.pth", fill(container)))
    assert list(arrays) == keys


@pytest.mark.parametrize("obj, listed", [
    ({"epoch": 3, "config": "x"}, "top-level keys: ['epoch', 'config']"),
    ({"state_dict": {}}, "top-level keys: ['state_dict']"),
    ([1, 2], "holds a list"),
])
def test_no_state_dict_lists_what_is_there(tmp_path, obj, listed):
    path = _save(tmp_path / "c.pth", obj, "legacy")
    with pytest.raises(CheckpointError, match=r"c\.pth: no state dict found") as error:
        _read(path)
    assert listed in str(error.value)


# ---------------------------------------------------------------------------------------
# Code in the file is refused before it runs.

def _payloads(marker: pathlib.Path):
    return {
        f"{os.system.__module__}.system": _Payload(os.system, f"touch '{marker}'"),
        "builtins.eval": _Payload(eval, f"open({str(marker)!r}, 'w').close()"),
    }


def test_payload_runs_under_plain_pickle(tmp_path):
    # Shows the payloads below are live: plain pickle executes them.
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_payloads(marker)["builtins.eval"]))
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle"])
@pytest.mark.parametrize("global_name", ["system", "builtins.eval"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, fmt, global_name):
    marker = tmp_path / "marker"
    name, payload = next((k, v) for k, v in _payloads(marker).items() if k.endswith(global_name))
    good = _Tensor(_ramp(), 0, (2,), (1,))
    # Hidden beside a good state dict; a plain pickle cannot hold tensors.
    obj = [payload] if fmt == "pickle" else {"state_dict": {"w": good}, "extra": [payload]}
    path = _save(tmp_path / "evil.pth", obj, fmt)
    with pytest.raises(CheckpointError) as error:
        _read(path)
    message = str(error.value)
    # Protocol 2 spells builtins as Python 2's __builtin__; the message names what was asked.
    asked = name.replace("builtins.", "__builtin__.")
    assert "evil.pth" in message and f"'{asked}'" in message and "refused" in message
    assert "nothing from the file was executed" in message
    assert not marker.exists()


def test_whole_module_pickle_is_refused(tmp_path):
    conv = _fake_global("torch.nn.modules.conv", "Conv2d")
    path = _save(tmp_path / "model.pth", {"model": _Payload(conv)})
    with pytest.raises(CheckpointError, match=r"refused .*'torch\.nn\.modules\.conv\.Conv2d'"):
        _read(path)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("offset, size, stride, problem", [
    (0, (13,), (1,), "beyond its storage"),
    (10, (2, 2), (1, 1), "beyond its storage"),
    (0, (3,), (-1,), "invalid stride"),
    (-1, (3,), (1,), "invalid storage offset"),
    (0, (3, 2), (1,), "size"),
])
def test_tensor_records_outside_their_storage_are_refused(tmp_path, fmt, offset, size,
                                                          stride, problem):
    path = _save(tmp_path / "c.pth", {"a": _Tensor(_ramp(), offset, size, stride)}, fmt)
    with pytest.raises(CheckpointError, match=problem):
        _read(path)


def test_pickled_state_cannot_rewrite_a_checked_tensor(tmp_path):
    # BUILD after the rebuild call would otherwise replace the bounds-checked shape.
    tensor = _Tensor(_ramp(), 0, (2,), (1,), state={"shape": (10**6,)})
    with pytest.raises(CheckpointError, match="sets the state of a Tensor"):
        _read(_save(tmp_path / "c.pth", {"a": tensor}))


# ---------------------------------------------------------------------------------------
# Damaged and foreign files.

def _legacy_data_start(data: bytes) -> int:
    """Offset of the first storage's element count: after the 5 pickles."""
    stream = io.BytesIO(data)
    for _ in range(5):
        for _op in pickletools.genops(stream):
            pass
    return stream.tell()


@pytest.mark.parametrize("name", REAL_CHECKPOINTS)
@pytest.mark.parametrize("keep", [0.99, 0.5, 0.05])
def test_truncated_files(tmp_path, name, keep):
    data = (FIXTURES / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=rf"{name}: .*(truncated|not a PyTorch)"):
        _read(path)


def test_flipped_byte_in_zip_storage_fails_crc(tmp_path):
    data = bytearray((FIXTURES / "zip_checkpoint.pth").read_bytes())
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo("zip_checkpoint/data/0")
    header = info.header_offset  # local header: 30 bytes + name + extra field, then data
    name_len = int.from_bytes(data[header + 26: header + 28], "little")
    extra_len = int.from_bytes(data[header + 28: header + 30], "little")
    data[header + 30 + name_len + extra_len + info.file_size // 2] ^= 0x10
    path = tmp_path / "flipped.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=r"flipped\.pth: corrupt .*CRC"):
        _read(path)


def test_flipped_byte_in_legacy_element_count(tmp_path):
    data = bytearray((FIXTURES / "legacy_checkpoint.pth").read_bytes())
    data[_legacy_data_start(bytes(data))] ^= 0x01
    path = tmp_path / "flipped.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=r"flipped\.pth: storage .* elements in the data"):
        _read(path)


@pytest.mark.parametrize("content", [
    b"", b"config: not a checkpoint\n", bytes(range(256)) * 4,
    pickle.dumps({"a": 1}, protocol=2),
])
def test_foreign_files_are_not_checkpoints(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"foreign\.bin: not a PyTorch checkpoint"):
        _read(path)


def test_npz_is_not_a_checkpoint():
    with pytest.raises(CheckpointError, match=r"expected\.npz: not a PyTorch checkpoint: "
                       r"a zip archive"):
        _read(FIXTURES / "expected.npz")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pth: no such file"):
        _read(tmp_path / "nope.pth")


@pytest.mark.parametrize("name", REAL_CHECKPOINTS)
def test_random_damage_gives_arrays_or_checkpoint_error(tmp_path, name):
    # Whatever the damage, the caller sees arrays or a CheckpointError, never another error.
    data = (FIXTURES / name).read_bytes()
    rng = np.random.default_rng(0)
    path = tmp_path / name
    for _ in range(100):
        damaged = bytearray(data)
        if rng.random() < 0.7:
            damaged[rng.integers(len(data))] ^= int(rng.integers(1, 256))
        else:
            damaged = damaged[: rng.integers(len(data))]
        path.write_bytes(damaged)
        try:
            _read(path)
        except CheckpointError as error:
            assert str(error).startswith(f"{path}: ")
