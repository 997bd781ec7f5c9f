"""split.csv, test_regions.json and assign_splits (hotformerloc.io.splits)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hotformerloc.io import LayoutFileError
from hotformerloc.io.splits import (
    SPLIT_COLUMNS,
    SplitRow,
    assign_splits,
    points_in_box,
    points_in_polygon,
    read_regions_json,
    read_split_csv,
    regions_json_text,
    split_csv_text,
    write_regions_json,
    write_split_csv,
)

HEADER = ",".join(SPLIT_COLUMNS) + "\n"
# |x - 17.5| + |y| <= 4: not axis-aligned, so its bounding box is not it
DIAMOND = [[13.5, 0.0], [17.5, 4.0], [21.5, 0.0], [17.5, -4.0]]
SQUARE = [[-5.0, -5.0], [15.0, -5.0], [15.0, 5.0], [-5.0, 5.0], [-5.0, -5.0]]


def test_split_csv_round_trip(tmp_path: Path) -> None:
    rows = [
        ("ground_a", 100.5, 1.23449, -7.0, "ground", "test"),
        ("aerial", 3.0, 12.0, 0.0005, "aerial", "train"),
        ("ground_a", 99.0, 0.0, 0.0, "ground", "buffer"),
    ]
    path = tmp_path / "split.csv"
    write_split_csv(path, rows)
    assert path.read_text() == (
        HEADER
        + "ground_a,100.500000,1.234,-7.000,ground,test\n"
        + "aerial,3.000000,12.000,0.001,aerial,train\n"
        + "ground_a,99.000000,0.000,0.000,ground,buffer\n"
    )
    back = read_split_csv(path)
    assert back == [
        SplitRow("ground_a", 100.5, 1.234, -7.0, "ground", "test"),
        SplitRow("aerial", 3.0, 12.0, 0.001, "aerial", "train"),
        SplitRow("ground_a", 99.0, 0.0, 0.0, "ground", "buffer"),
    ]
    assert split_csv_text(back) == path.read_text()  # SplitRows write back unchanged
    assert split_csv_text([]) == HEADER and read_split_csv(_write(tmp_path, HEADER)) == []


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "w" / "split.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


ROW = "g,1.0,2.0,3.0,ground,train\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sequence,timestamp,x,source,split\n",
            ": missing column(s) y (header: 'sequence,timestamp,x,source,split')",
        ),
        (HEADER + ROW + "g,oops,2,3,ground,train\n", " line 3: timestamp 'oops' is not a number"),
        (HEADER + "g,1.0,2.0,nan,ground,train\n", " line 2: y 'nan' is not finite"),
        (HEADER + "g,1.0,2.0\n", " line 2: too few fields"),
        (HEADER + "a/b,1.0,2.0,3.0,ground,train\n", " line 2: invalid sequence name 'a/b'"),
        (
            HEADER + "g,1.0,2.0,3.0,satellite,train\n",
            " line 2: source 'satellite' is not one of ('ground', 'aerial')",
        ),
        (
            HEADER + "g,1.0,2.0,3.0,ground,val\n",
            " line 2: split 'val' is not one of ('test', 'buffer', 'train')",
        ),
        (
            HEADER + ROW + "g,1.0,5.0,3.0,ground,test\n",
            ": duplicate row for sequence 'g', timestamp 1.000000",
        ),
    ],
)
def test_split_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(LayoutFileError) as err:
        read_split_csv(path)
    assert str(err.value) == f"{path}{message}"


def test_regions_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "test_regions.json"
    write_regions_json(path, [np.array(DIAMOND), SQUARE], 6.0)
    text = path.read_text()
    assert text == regions_json_text([DIAMOND, SQUARE], 6.0)
    assert text == json.dumps({"regions": [DIAMOND, SQUARE], "buffer": 6.0}, indent=1) + "\n"
    back = read_regions_json(path)
    assert back.buffer == 6.0 and len(back.regions) == 2
    np.testing.assert_array_equal(back.regions[0], DIAMOND)
    np.testing.assert_array_equal(back.regions[1], SQUARE)
    assert back.regions[0].dtype == np.float64
    path.write_text(json.dumps({"regions": [DIAMOND], "note": "other keys are ignored"}))
    assert read_regions_json(path).buffer is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", r"not valid JSON \("),
        ('{"polygons": []}', r'expected \{"regions": \[\[\[x, y\], \.\.\.\], \.\.\.\]\}'),
        ('{"regions": [[[0, 0], [1, 0]]]}', r"region 0 must be a list of >= 3 finite \[x, y\] "),
        ('{"regions": [[[0, 0], [1, 0], [1, 1]], [[0, 0], [1, "a"], [1, 1]]]}', r"region 1 "),
    ],
)
def test_regions_json_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(LayoutFileError, match=problem) as err:
        read_regions_json(path)
    assert str(err.value).startswith(f"{path}: ")
    with pytest.raises(LayoutFileError, match=r"cannot read test regions"):
        read_regions_json(tmp_path / "missing.json")


def test_region_shapes() -> None:
    xy = np.array([[17.5, 0.0], [14.0, 3.0], [20.0, 1.0], [13.5, 4.0], [30.0, 0.0]])
    assert points_in_polygon(xy, DIAMOND).tolist() == [True, False, True, False, False]
    assert points_in_box(xy, DIAMOND).tolist() == [True, True, True, True, False]
    # the box is closed: its boundary is inside
    edge = np.array([[-5.0, 0.0], [15.0, 5.0], [15.000001, 0.0]])
    assert points_in_box(edge, SQUARE).tolist() == [True, True, False]


def test_assign_splits_polygon_and_box() -> None:
    xy = np.array([[17.5, 0.0], [14.0, 3.0], [20.0, 1.0], [30.0, 0.0], [40.0, 0.0]])
    ground = np.array([True, True, False, True, True])
    assert assign_splits(xy, ground, [DIAMOND], 13.0).tolist() == [
        "test",
        "buffer",
        "test",
        "buffer",
        "train",
    ]
    assert assign_splits(xy, ground, [DIAMOND], 13.0, shape="box").tolist() == [
        "test",
        "test",
        "test",
        "buffer",
        "train",
    ]
    # the generator's case: an axis-aligned square, boundary included
    xy = np.array([[0, 0], [10, 0], [40, 0], [100, 0], [5, 5]], float)
    ground = np.array([True, True, True, True, False])
    split = assign_splits(xy, ground, [SQUARE], buffer=30.0, shape="box")
    assert split.tolist() == ["test", "test", "buffer", "train", "test"]
    assert assign_splits(xy, ground, [], 30.0).tolist() == ["train"] * 5
    assert assign_splits(xy, ground, [SQUARE], 0.0, shape="box").tolist()[2] == "train"
    with pytest.raises(ValueError, match="shape must be one of"):
        assign_splits(xy, ground, [SQUARE], 1.0, shape="disc")  # type: ignore[arg-type]
