"""``hotformerloc dataset prepare|check`` for the public benchmarks (spec 4, 6).

One entry point per action:

* :func:`check_dataset` scans a dataset folder and returns a :class:`CheckReport` (missing
  runs, wrong sizes/dtypes, points out of range, pose/cloud count mismatches, bad CSVs,
  the release/variant detected); a malformed folder gives a report, never an exception;
* :func:`prepare_dataset` builds the paper's training tuples and evaluation sets and writes
  them in our format (:mod:`hotformerloc.data.prepared`), atomically, with a manifest.

Datasets: ``oxford``, ``inhouse`` (:mod:`.pnv`), ``cs-campus3d`` (:mod:`.campus3d`),
``wild-places`` (:mod:`.wild_places`), ``cs-wild-places`` (:mod:`.cs_wild_places`), and
users' recordings ``kitti`` / ``sequence`` (:mod:`hotformerloc.data.recordings`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from hotformerloc.data.benchmark import DatasetError
from hotformerloc.data.prepare.campus3d import build_campus3d, check_campus3d
from hotformerloc.data.prepare.common import (
    CheckReport,
    Finding,
    Findings,
    PreparedBuild,
    PrepareError,
    PrepareOptions,
    check_output,
    write_prepared,
)
from hotformerloc.data.prepare.cs_wild_places import build_cs_wild_places, check_cs_wild_places
from hotformerloc.data.prepare.pnv import build_inhouse, build_oxford, check_inhouse, check_oxford
from hotformerloc.data.prepare.reference import ReferencePickleError
from hotformerloc.data.prepare.regions import RegionsError, load_regions
from hotformerloc.data.prepare.wild_places import build_wild_places, check_wild_places
from hotformerloc.io import PointCloudError
from hotformerloc.io.pickles import PickleError

__all__ = [
    "DATASETS",
    "RECORDING_LAYOUTS",
    "CheckReport",
    "Finding",
    "PrepareError",
    "PrepareOptions",
    "ReferencePickleError",
    "RegionsError",
    "check_dataset",
    "load_regions",
    "prepare_dataset",
]

_Check = Callable[[Path, PrepareOptions, Findings], None]
_Build = Callable[[Path, PrepareOptions, Findings], PreparedBuild]

#: Public benchmarks: name -> (check, build).
DATASETS: Mapping[str, tuple[_Check, _Build]] = {
    "oxford": (check_oxford, build_oxford),
    "inhouse": (check_inhouse, build_inhouse),
    "cs-campus3d": (check_campus3d, build_campus3d),
    "wild-places": (check_wild_places, build_wild_places),
    "cs-wild-places": (check_cs_wild_places, build_cs_wild_places),
}
#: Users' recordings, prepared by :mod:`hotformerloc.data.recordings`.
RECORDING_LAYOUTS = ("kitti", "sequence")
#: Errors a malformed folder may raise while scanning (turned into findings by check).
_SCAN_ERRORS = (PrepareError, PickleError, PointCloudError, DatasetError, OSError)


def _known(name: str) -> None:
    if name not in DATASETS and name not in RECORDING_LAYOUTS:
        known = ", ".join([*DATASETS, *RECORDING_LAYOUTS])
        raise PrepareError(f"unknown dataset {name!r} (known: {known})")


def check_dataset(
    name: str, root: str | Path, options: PrepareOptions | None = None
) -> CheckReport:
    """Scan ``root`` as dataset ``name`` and report every problem found.

    Raises:
        PrepareError: only for an unknown dataset name (a malformed folder is reported).
    """
    _known(name)
    root = Path(root)
    opts = options or PrepareOptions()
    if name in RECORDING_LAYOUTS:
        from hotformerloc.data.recordings import check_recordings

        findings = Findings()
        findings.detected["layout"] = name
        for severity, message in check_recordings(name, root):
            if severity == "error":
                findings.error(message)
            elif severity == "warning":
                findings.warning(message)
            else:
                findings.info(message)
        return findings.report(name, root)
    findings = Findings()
    try:
        DATASETS[name][0](root, opts, findings)
    except _SCAN_ERRORS as e:
        findings.error(str(e))
    return findings.report(name, root)


def prepare_dataset(
    name: str,
    root: str | Path,
    out: str | Path,
    options: PrepareOptions | None = None,
    force: bool = False,
    recording_config: Any = None,
) -> dict[str, Any]:
    """Build dataset ``name`` from ``root`` into ``out`` (our format); returns the manifest.

    ``recording_config`` is the ``RecordingConfig`` passed on for ``kitti`` / ``sequence``.

    Raises:
        PrepareError: unknown dataset, ``out`` exists without ``force``, a malformed folder
            (the first problem named; ``check`` lists all), missing regions or pickles
            (names what to pass); :class:`RegionsError`, :class:`ReferencePickleError` are
            subclasses.
    """
    _known(name)
    root, out = Path(root), Path(out)
    check_output(out, force)
    if name in RECORDING_LAYOUTS:
        from hotformerloc.data.recordings import prepare_recordings

        return prepare_recordings(name, root, out, config=recording_config, force=force)
    opts = options or PrepareOptions()
    findings = Findings()
    build = DATASETS[name][1](root, opts, findings)
    report = findings.report(name, root)
    info = dict(build.info)
    info["findings"] = [asdict(f) for f in report.findings if f.severity != "info"]
    build = replace(build, info=info)
    recorded = {k: v for k, v in asdict(opts).items() if v not in (None, {}, ())}
    return write_prepared(build, out, force, recorded)
