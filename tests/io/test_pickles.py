"""The restricted unpickler: plain data and numpy arrays load; everything else is refused
before it can run, with an error naming the file and the refused global."""

import os
import pickle
import pickletools
import subprocess
import sys
import types

import numpy as np
import pytest

from hotformerloc.io.pickles import PickledObject, PickleError, load_plain_pickle

PLAIN = {
    "ints": [1, -2, 3],
    "nested": {"a": (1.5, None, True), 7: {"x": b"bytes", "y": "text"}},
    "set": {1, 2, 3},
    "frozen": frozenset({"a"}),
    "empty": b"",
    "big": 2**70,
    "complex": 1 + 2j,
}


def dump(tmp_path, obj, protocol, name="data.pickle"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_plain_data_round_trips(tmp_path, protocol):
    assert load_plain_pickle(dump(tmp_path, PLAIN, protocol)) == PLAIN


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_and_scalars_round_trip(tmp_path, protocol):
    obj = {
        "i64": np.arange(5, dtype=np.int64),
        "f32": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "big_endian": np.arange(3, dtype=">i4"),
        "empty": np.zeros((0, 3)),
        "scalar": np.float64(5735712.768),
        "int_scalar": np.int32(-7),
        # the reference's positions: np.array over a mixed pandas row -> object array
        "object": np.array([np.float64(1.25), 2.5], dtype=object),
    }
    path = dump(tmp_path, obj, protocol)
    out = load_plain_pickle(path)
    trusted = pickle.loads(path.read_bytes())  # the standard unpickler, same bytes
    for key in ("i64", "f32", "fortran", "big_endian", "empty"):
        assert out[key].dtype == trusted[key].dtype and out[key].shape == obj[key].shape
        np.testing.assert_array_equal(out[key], obj[key])
    assert out["fortran"].flags["F_CONTIGUOUS"]
    assert type(out["scalar"]) is np.float64 and out["scalar"] == obj["scalar"]
    assert type(out["int_scalar"]) is np.int32 and out["int_scalar"] == -7
    assert out["object"].dtype == object and out["object"].tolist() == [1.25, 2.5]
    out["i64"][0] = 99  # a writable copy, not a view on the file's bytes
    assert out["i64"][0] == 99


class Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_os_system_reduce_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = dump(tmp_path, {"ok": [1, 2], "evil": Evil(marker)}, 4, "evil.pickle")
    with pytest.raises(PickleError) as e:
        load_plain_pickle(path)
    msg = str(e.value)
    assert str(path) in msg and "refused global" in msg
    assert f"{os.system.__module__}.system" in msg  # 'posix.system' / 'nt.system'
    assert not marker.exists()
    assert isinstance(e.value, ValueError) and e.value.path == str(path)


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),
        (b"csubprocess\nPopen\n(S'true'\ntR.", "subprocess.Popen"),
        (b"cnumpy\nload\n(S'x.npy'\ntR.", "numpy.load"),
        (b"cbuiltins\ngetattr\n(cbuiltins\nobject\nS'__subclasses__'\ntR.", "builtins.getattr"),
    ],
)
def test_other_callables_are_refused(tmp_path, payload, name):
    path = tmp_path / "bad.pickle"
    path.write_bytes(payload)
    with pytest.raises(PickleError, match=f"refused global '{name}'"):
        load_plain_pickle(path)


def test_numpy_reconstruct_only_builds_ndarrays(tmp_path):
    # _reconstruct is allowed, but only with numpy.ndarray as the subtype
    payload = b"cnumpy.core.multiarray\n_reconstruct\n(cbuiltins\nset\n(I0\ntS'b'\ntR."
    path = tmp_path / "sub.pickle"
    path.write_bytes(payload)
    with pytest.raises(PickleError, match=r"only numpy\.ndarray"):
        load_plain_pickle(path)
    # numpy.ndarray itself cannot be called directly
    path.write_bytes(b"cnumpy\nndarray\n((I1\nttR.")
    with pytest.raises(PickleError, match=r"numpy\.ndarray may only appear"):
        load_plain_pickle(path)


def test_records_are_inert_and_only_when_named(tmp_path):
    mod = types.ModuleType("datasets.base_datasets")

    class TrainingTuple:
        def __init__(self, id, positives):
            self.id = id
            self.positives = positives

    TrainingTuple.__module__ = "datasets.base_datasets"
    TrainingTuple.__qualname__ = "TrainingTuple"
    mod.TrainingTuple = TrainingTuple
    saved = {k: sys.modules.get(k) for k in ("datasets", "datasets.base_datasets")}
    sys.modules["datasets"] = types.ModuleType("datasets")
    sys.modules["datasets.base_datasets"] = mod
    try:
        path = dump(tmp_path, {0: TrainingTuple(0, np.array([1, 2]))}, 4)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    with pytest.raises(
        PickleError, match=r"refused global 'datasets\.base_datasets\.TrainingTuple'"
    ):
        load_plain_pickle(path)
    out = load_plain_pickle(path, records=["TrainingTuple"])[0]
    assert isinstance(out, PickledObject)
    assert out.qualname == "datasets.base_datasets.TrainingTuple"
    assert out.attributes()["id"] == 0
    np.testing.assert_array_equal(out.attributes()["positives"], [1, 2])
    assert load_plain_pickle(path, records=["datasets.base_datasets.TrainingTuple"])[0].args == ()


def test_object_array_holding_a_refused_global_is_refused(tmp_path):
    arr = np.empty(1, dtype=object)
    arr[0] = Evil(tmp_path / "x")
    with pytest.raises(PickleError, match="refused global"):
        load_plain_pickle(dump(tmp_path, arr, 2))


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "file not found"), (b"", "empty"), (b"\x80\x04\x95", "not a readable")],
)
def test_unreadable_files_name_the_file(tmp_path, content, problem):
    path = tmp_path / "broken.pickle"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PickleError, match=problem) as e:
        load_plain_pickle(path)
    assert str(path) in str(e.value)


def test_truncated_pickle_is_an_error(tmp_path):
    data = pickle.dumps({"a": np.arange(100)}, protocol=5)
    path = tmp_path / "cut.pickle"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PickleError, match=r"cut\.pickle"):
        load_plain_pickle(path)


def test_malicious_payload_is_real_and_refused(tmp_path):
    """The payload really runs under pickle.load (in a child process); ours refuses it."""
    marker = tmp_path / "ran"
    path = dump(tmp_path, [Evil(marker), Evil(marker)], 2, "two.pickle")
    ops = [op.name for op, _, _ in pickletools.genops(path.read_bytes())]
    assert "GLOBAL" in ops
    with pytest.raises(PickleError):
        load_plain_pickle(path)
    # the same file through the standard unpickler would run the command
    subprocess.run(
        [sys.executable, "-c", f"import pickle; pickle.load(open({str(path)!r}, 'rb'))"],
        check=True,
    )
    assert marker.exists()
