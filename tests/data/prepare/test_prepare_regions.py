"""Regions files: open squares, closed polygons and circles, axes order, clear errors."""

import json

import numpy as np
import pytest

from hotformerloc.data.prepare.regions import Circle, Polygon, RegionsError, Square, load_regions


def test_square_is_open_like_the_pnv_split_code():
    sq = Square("P", (1000.0, 2000.0), 150.0)
    xy = np.array([[1000, 2000], [1149.5, 2149.5], [1150, 2000], [1000, 1850], [850.01, 2000]])
    assert sq.contains(xy).tolist() == [True, True, False, False, True]


def test_circle_is_closed():
    c = Circle("C", (0.0, 0.0), 30.0)
    assert c.contains(np.array([[30, 0], [18, 24], [30.001, 0], [0, 0]])).tolist() == [
        True,
        True,
        False,
        True,
    ]


def test_polygon_closed_with_boundary_and_concavity():
    # an L shape: [0,2]x[0,1] plus [0,1]x[1,2]
    poly = Polygon("L", np.array([[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]], float))
    pts = np.array(
        [
            [0.5, 0.5],  # inside
            [1.5, 1.5],  # the notch: outside
            [2, 0.5],  # right edge
            [1, 1.5],  # inner vertical edge
            [0, 0],  # a vertex
            [1.5, 1],  # inner horizontal edge
            [2.0001, 0.5],  # just outside
            [-1, 1],  # left of everything, on a vertex's horizontal line
        ]
    )
    assert poly.contains(pts).tolist() == [True, False, True, True, True, True, False, False]


def test_polygon_matches_a_brute_force_winding_reference():
    rng = np.random.default_rng(0)
    verts = np.array([[0, 0], [4, 1], [3, 4], [1, 3], [2, 2]], float)
    pts = rng.uniform(-1, 5, (400, 2))

    def winding(p):
        total = 0.0
        for a, b in zip(verts, np.roll(verts, -1, 0), strict=True):
            u, v = a - p, b - p
            total += np.arctan2(u[0] * v[1] - u[1] * v[0], u @ v)
        return abs(total) > np.pi

    expected = [winding(p) for p in pts]
    assert Polygon("P", verts).contains(pts).tolist() == expected


def write(tmp_path, data):
    path = tmp_path / "regions.json"
    path.write_text(json.dumps(data))
    return path


def test_axes_order_is_explicit(tmp_path):
    doc = {
        "format": "hotformerloc-regions",
        "version": 1,
        "axes": "northing,easting",
        "locations": {
            "University": {
                "squares": [{"name": "P5", "center": [10, 20], "half_size": 5}],
                "buffers": [{"center": [1, 2], "radius": 3}],
            }
        },
    }
    reg = load_regions(write(tmp_path, doc), ["university"]).get("university")
    assert reg.squares[0].center == (20.0, 10.0)  # stored as (easting, northing)
    assert reg.buffers[0].center == (2.0, 1.0)
    assert reg.in_test(np.array([[20.0, 10.0], [10.0, 20.0]])).tolist() == [True, False]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"axes": None}, '"axes" must be one of'),
        ({"version": 2}, '"version": 1'),
        ({"locations": {"mars": {}}}, "unknown location 'mars'"),
        (
            {"locations": {"venman": {"polygons": [{"vertices": [[0, 0], [1, 1]]}]}}},
            "at least 3 distinct vertices",
        ),
        (
            {"locations": {"venman": {"buffers": [{"center": [0, "x"], "radius": 3}]}}},
            r"locations.venman.buffers\[0\].center",
        ),
        (
            {"locations": {"venman": {"squares": [{"center": [0, 0], "half_size": -1}]}}},
            "half_size: expected a positive number",
        ),
        ({"locations": {"venman": {"circles": []}}}, "unknown key"),
    ],
)
def test_bad_documents_name_the_file_and_entry(tmp_path, change, message):
    doc = {
        "format": "hotformerloc-regions",
        "version": 1,
        "axes": "easting,northing",
        "locations": {"venman": {}},
    }
    doc.update(change)
    path = write(tmp_path, doc)
    with pytest.raises(RegionsError, match=message) as e:
        load_regions(path, ["venman", "karawatha"])
    assert str(path) in str(e.value)


def test_missing_and_invalid_json(tmp_path):
    with pytest.raises(RegionsError, match="not found"):
        load_regions(tmp_path / "none.json", ["venman"])
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(RegionsError, match="not valid JSON"):
        load_regions(tmp_path / "bad.json", ["venman"])
