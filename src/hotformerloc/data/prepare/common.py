"""Shared parts of the public-benchmark preparers: findings and check reports, options,
CSV/cloud checks, and the atomic writer of the prepared format
(:mod:`hotformerloc.data.prepared`)."""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from hotformerloc import __version__
from hotformerloc.data.prepared import (
    CLOUD_FORMATS,
    EVALUATION_FILE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    SUBMAP_COLUMNS,
    SUBMAPS_FILE,
    TUPLES_FILE,
    EvaluationSpec,
    sha256_file,
)
from hotformerloc.data.tuples import Tuples
from hotformerloc.errors import HotformerlocError
from hotformerloc.io import PointCloudError, read_pointcloud
from hotformerloc.io.atomic import atomic_write_bytes, atomic_write_text
from hotformerloc.io.splits import SOURCES, SPLITS

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("error", "warning", "info")
#: Problems of one kind listed one by one before they are summarised as a count.
MAX_LISTED = 8
#: PointNetVLAD submap file: 4096 points x 3 float64.
PNV_POINTS = 4096
PNV_BYTES = PNV_POINTS * 3 * 8


class PrepareError(HotformerlocError):
    """A dataset cannot be prepared (malformed folder, missing input, bad option); the
    message names the input and what is needed."""


@dataclass(frozen=True)
class Finding:
    """One line of a check report: ``severity`` (``error``/``warning``/``info``) and a
    message naming the file, run or option concerned."""

    severity: str
    message: str


@dataclass(frozen=True)
class CheckReport:
    """Result of ``hotformerloc dataset check``: what was detected (``detected``: e.g.
    ``{"release": "pcd"}``) and the findings, errors first."""

    dataset: str
    root: str
    detected: Mapping[str, str]
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": self.root,
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "detected": dict(self.detected),
            "findings": [{"severity": f.severity, "message": f.message} for f in self.findings],
        }


class Findings:
    """Collects findings while a folder is scanned; repeated problems of one ``kind`` are
    listed up to :data:`MAX_LISTED` times, then counted in one summary line."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self.detected: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._kinds: dict[str, str] = {}

    def add(self, severity: Severity, message: str, kind: str | None = None) -> None:
        if kind is not None:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self._kinds[kind] = severity
            if self._counts[kind] > MAX_LISTED:
                return
        self.items.append(Finding(severity, message))

    def error(self, message: str, kind: str | None = None) -> None:
        self.add("error", message, kind)

    def warning(self, message: str, kind: str | None = None) -> None:
        self.add("warning", message, kind)

    def info(self, message: str) -> None:
        self.add("info", message)

    def report(self, dataset: str, root: Path) -> CheckReport:
        items = list(self.items)
        for kind, n in self._counts.items():
            if n > MAX_LISTED:
                items.append(Finding(self._kinds[kind], f"... and {n - MAX_LISTED} more: {kind}"))
        order = {s: i for i, s in enumerate(SEVERITIES)}
        items.sort(key=lambda f: order[f.severity])  # stable: scan order within a severity
        return CheckReport(dataset, str(root), dict(self.detected), tuple(items))

    def raise_errors(self, dataset: str, root: Path) -> None:
        """Raise :class:`PrepareError` with the first error (and the error count)."""
        errors = [f for f in self.report(dataset, root).findings if f.severity == "error"]
        if errors:
            more = f" ({len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
            raise PrepareError(
                f"{errors[0].message}{more}; run `hotformerloc dataset check {dataset} "
                f"--root {root}` for the full report"
            )


@dataclass(frozen=True)
class PrepareOptions:
    """Options of ``prepare`` / ``check`` (each dataset uses the ones it documents).

    * ``release``: Wild-Places ``pcd`` (old release, the paper's) or ``v3``;
    * ``subset``: CS-Wild-Places ``baseline`` or ``unseen``;
    * ``variant``: CS-Wild-Places ``normalised`` or ``metric``;
    * ``regions``: a regions file (:mod:`~hotformerloc.data.prepare.regions`);
    * ``pickles``: a folder with the reference's pickles (looked up by their usual names);
    * ``pickle_files``: {role: file}, e.g. ``{"train": ..., "oxford.query": ...}``;
    * ``sample``: clouds read per run to check dtype/shape/range (all with ``full``).
    """

    release: str | None = None
    subset: str | None = None
    variant: str | None = None
    regions: Path | None = None
    pickles: Path | None = None
    pickle_files: Mapping[str, Path] = field(default_factory=dict)
    sample: int = 3
    full: bool = False


# --------------------------------------------------------------------------- scanning


def list_dirs(path: Path) -> list[str]:
    """Sorted names of the sub-folders of ``path`` (hidden ones skipped)."""
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def sample_positions(n: int, opts: PrepareOptions) -> list[int]:
    """Indices of the clouds of a run read by a check: all with ``full``, else up to
    ``sample`` evenly spaced ones (first and last included)."""
    if opts.full or n <= opts.sample:
        return list(range(n))
    if opts.sample <= 0:
        return []
    if opts.sample == 1:
        return [0]
    return sorted({round(k * (n - 1) / (opts.sample - 1)) for k in range(opts.sample)})


@dataclass(frozen=True, eq=False)
class CsvTable:
    """A parsed CSV: ``text`` {column: (N,) str}, ``values`` {column: (N,) float64} for
    the numeric columns asked for."""

    path: Path
    text: Mapping[str, np.ndarray]
    values: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.text.values()))) if self.text else 0


def read_csv_table(
    path: Path, numeric: Sequence[str], findings: Findings, what: str
) -> CsvTable | None:
    """Read a headed CSV whose ``numeric`` columns must be finite numbers.

    Problems (missing/unreadable file, missing column, short line, bad number) become
    error findings naming the file and line; returns ``None`` then.
    """
    if not path.is_file():
        findings.error(f"{path}: missing {what}", kind=f"missing {what}")
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        findings.error(f"{path}: cannot read {what} ({e})")
        return None
    rows = list(csv.reader(text.splitlines()))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        findings.error(f"{path}: empty {what} (no header)")
        return None
    header = [h.strip() for h in rows[0]]
    missing = [c for c in numeric if c not in header]
    if missing:
        findings.error(
            f"{path}: {what} lacks column(s) {', '.join(missing)} (header: {','.join(header)})"
        )
        return None
    cols: dict[str, list[str]] = {h: [] for h in header}
    for line, rec in enumerate(rows[1:], start=2):
        if len(rec) < len(header):
            findings.error(
                f"{path} line {line}: {len(rec)} fields, the header has {len(header)}",
                kind=f"short lines in {path}",
            )
            return None
        for h, v in zip(header, rec, strict=False):
            cols[h].append(v.strip())
    values: dict[str, np.ndarray] = {}
    for c in numeric:
        try:
            a = np.array([float(v) for v in cols[c]], np.float64)
        except ValueError:
            bad = next(i for i, v in enumerate(cols[c]) if not _is_float(v))
            findings.error(f"{path} line {bad + 2}: {c} {cols[c][bad]!r} is not a number")
            return None
        if not np.isfinite(a).all():
            bad = int(np.flatnonzero(~np.isfinite(a))[0])
            findings.error(f"{path} line {bad + 2}: {c} {cols[c][bad]!r} is not finite")
            return None
        values[c] = a
    return CsvTable(path, {h: np.array(v, dtype=str) for h, v in cols.items()}, values)


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def check_pnv_file(path: Path, findings: Findings, read: bool) -> None:
    """A PointNetVLAD ``.bin``: exists, is 4096 x 3 float64 (98,304 bytes); with ``read``
    also finite and within [-1, 1]. Problems become error findings."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        findings.error(f"{path}: missing cloud file", kind="missing cloud files")
        return
    if size != PNV_BYTES:
        findings.error(
            f"{path}: {size} bytes, a PointNetVLAD submap is {PNV_POINTS} x 3 float64 = "
            f"{PNV_BYTES} bytes",
            kind="PNV .bin files of the wrong size",
        )
        return
    if read:
        xyz = np.fromfile(path, dtype="<f8").reshape(-1, 3)
        if not np.isfinite(xyz).all():
            findings.error(f"{path}: non-finite coordinates", kind="non-finite clouds")
        elif np.abs(xyz).max() > 1.0:
            findings.error(
                f"{path}: points outside [-1, 1] (max |coordinate| {np.abs(xyz).max():.3f}); "
                f"PNV submaps are normalised",
                kind="PNV clouds outside [-1, 1]",
            )


def check_cloud_file(path: Path, fmt: str, findings: Findings) -> None:
    """Read one cloud (format name of :data:`hotformerloc.io.FORMATS`); an unreadable,
    empty or non-finite cloud becomes an error finding."""
    try:
        read_pointcloud(path, fmt)
    except PointCloudError as e:
        findings.error(str(e), kind="unreadable clouds")


def match_timestamps(
    stems: Sequence[str], pose_times: np.ndarray, tolerance: float = 1e-3
) -> tuple[np.ndarray, list[str]]:
    """Pose row of each cloud file stem (a timestamp in seconds), by nearest pose time.

    Returns ``(rows, unmatched)``: (N,) int64 pose rows (-1 for an unmatched stem) and the
    stems that are not numbers or have no pose within ``tolerance`` seconds.
    """
    rows = np.full(len(stems), -1, np.int64)
    unmatched: list[str] = []
    if len(pose_times) == 0:
        return rows, list(stems)
    order = np.argsort(pose_times, kind="stable")
    st = pose_times[order]
    for i, s in enumerate(stems):
        try:
            t = float(s)
        except ValueError:
            unmatched.append(s)
            continue
        k = int(np.searchsorted(st, t))
        best = min((j for j in (k - 1, k) if 0 <= j < len(st)), key=lambda j: abs(st[j] - t))
        if abs(st[best] - t) <= tolerance:
            rows[i] = order[best]
        else:
            unmatched.append(s)
    return rows, unmatched


# --------------------------------------------------------------------------- reference paths


def path_key(path: str) -> str:
    """A reference pickle's relative path, normalised: posix separators, no ``./``."""
    p = path.replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return p.lstrip("/")


class PathIndex:
    """Finds our row of a path written in a reference pickle: exact relative path, or the
    same path with leading folders dropped (pickles made relative to a parent folder)."""

    def __init__(self, relpaths: Sequence[str]) -> None:
        self._rows = {path_key(p): i for i, p in enumerate(relpaths)}

    def find(self, path: str) -> int | None:
        parts = PurePosixPath(path_key(path)).parts
        for k in range(len(parts)):
            row = self._rows.get("/".join(parts[k:]))
            if row is not None:
                return row
        return None


def pickle_role_files(
    opts: PrepareOptions, roles: Mapping[str, Sequence[str]], findings: Findings
) -> dict[str, Path]:
    """The reference pickle of each role: ``pickle_files[role]`` if given, else the file of
    ``opts.pickles`` matching the first of ``roles[role]`` (file names or ``fnmatch``
    patterns, case-insensitive) that matches anything.

    Unknown roles, missing files, an absent folder and a pattern matching several files
    become error findings.
    """
    out: dict[str, Path] = {}
    for role, path in opts.pickle_files.items():
        if role not in roles:
            findings.error(
                f"--pickle {role}=...: unknown role for this dataset (roles: {', '.join(roles)})"
            )
        elif not Path(path).is_file():
            findings.error(f"{path}: pickle file for role {role!r} not found")
        else:
            out[role] = Path(path)
    if opts.pickles is None:
        return out
    if not opts.pickles.is_dir():
        findings.error(f"{opts.pickles}: --pickles folder does not exist")
        return out
    present = sorted(p for p in opts.pickles.iterdir() if p.is_file())
    for role, patterns in roles.items():
        if role in out:
            continue
        for pattern in patterns:
            hits = [p for p in present if fnmatch.fnmatch(p.name.lower(), pattern.lower())]
            if len(hits) > 1:
                findings.error(
                    f"{opts.pickles}: several files match {pattern!r} for role {role!r} "
                    f"({', '.join(p.name for p in hits)}); pass --pickle {role}=FILE"
                )
            if hits:
                out[role] = hits[0]
                break
    return out


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True, eq=False)
class PreparedBuild:
    """Everything one preparer produces, before it is written.

    Columns (N rows, see :class:`~hotformerloc.data.prepared.PreparedDataset`): ``world``,
    ``sequence``, ``timestamp``, ``xy`` (N, 2), ``source``, ``split``, ``relpath``.
    ``train_index`` (T,) ascending rows of ``tuples``; ``evaluation``; ``info``: extra
    manifest fields (detected release, regions used, reference checks, ...).
    """

    dataset: str
    source_root: Path
    cloud_format: str
    scale: float
    world: np.ndarray
    sequence: np.ndarray
    timestamp: np.ndarray
    xy: np.ndarray
    source: np.ndarray
    split: np.ndarray
    relpath: np.ndarray
    train_index: np.ndarray
    tuples: Tuples
    evaluation: EvaluationSpec
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("world", "sequence", "source", "split", "relpath"):
            object.__setattr__(self, name, np.asarray(getattr(self, name)).astype(str))
        n = len(self.relpath)
        for name in ("world", "sequence", "timestamp", "source", "split"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"PreparedBuild.{name} has {len(getattr(self, name))} rows != {n}")
        if self.xy.shape != (n, 2) or not np.isfinite(self.xy).all():
            raise ValueError("PreparedBuild.xy must be (N, 2) finite")
        if not set(self.source.tolist()) <= set(SOURCES) or not set(self.split.tolist()) <= set(
            SPLITS
        ):
            raise ValueError("PreparedBuild: unknown source or split value")
        if self.cloud_format not in CLOUD_FORMATS:
            raise ValueError(f"PreparedBuild: unknown cloud format {self.cloud_format!r}")
        if len(self.tuples) != len(self.train_index):
            raise ValueError("PreparedBuild: one tuple per training row is needed")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"PreparedBuild: scale must be > 0, got {self.scale}")

    def counts(self) -> dict[str, Any]:
        """Submaps per world / sequence / source / split, training rows, and queries and
        database sizes per evaluation location."""
        per_world: dict[str, Any] = {}
        for w in sorted(set(self.world.tolist())):  # plain str keys (JSON)
            m = self.world == w
            seqs = {
                str(s): int((self.sequence[m] == s).sum()) for s in sorted(set(self.sequence[m]))
            }
            per_world[w] = {
                "submaps": int(m.sum()),
                "sequences": seqs,
                "source": {s: int((self.source[m] == s).sum()) for s in SOURCES},
                "split": {s: int((self.split[m] == s).sum()) for s in SPLITS},
            }
        evaluation = {}
        for loc in self.evaluation.locations:
            db = loc.aerial.rows.size if loc.aerial is not None else None
            evaluation[loc.name] = {
                "queries": loc.num_queries,
                "runs": len(loc.runs),
                **({"database": db} if db is not None else {}),
            }
        return {
            "submaps": len(self.relpath),
            "train_tuples": len(self.train_index),
            "worlds": per_world,
            "evaluation": evaluation,
        }


def _csv_text(build: PreparedBuild) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUBMAP_COLUMNS)
    for i in range(len(build.relpath)):
        w.writerow(
            [
                build.world[i],
                build.sequence[i],
                repr(float(build.timestamp[i])),
                repr(float(build.xy[i, 0])),
                repr(float(build.xy[i, 1])),
                build.source[i],
                build.split[i],
                build.relpath[i],
            ]
        )
    return buf.getvalue()


def _csr(lists: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(lists) + 1, np.int64)
    ptr[1:] = np.cumsum([len(a) for a in lists])
    flat = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)
    return ptr, flat


def _tuples_bytes(build: PreparedBuild) -> bytes:
    pos_ptr, pos = _csr(build.tuples.positives)
    nn_ptr, nn = _csr(build.tuples.non_negatives)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        rows=np.asarray(build.train_index, np.int64),
        positives_indptr=pos_ptr,
        positives=pos,
        non_negatives_indptr=nn_ptr,
        non_negatives=nn,
    )
    return buf.getvalue()


def check_output(out: Path, force: bool) -> None:
    """Refuse an existing ``out`` unless ``force`` (raises :class:`PrepareError`)."""
    if out.exists() and not force:
        raise PrepareError(f"{out}: output already exists (pass --force to replace it)")
    if out.exists() and not out.is_dir():
        raise PrepareError(f"{out}: exists and is not a folder")


def write_prepared(
    build: PreparedBuild, out: Path, force: bool, options: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``build`` to ``out`` in the prepared format; returns the manifest.

    The files go to a temporary folder beside ``out`` (each written atomically, the
    manifest with every file's SHA-256 last), which is then renamed onto ``out``; an
    existing ``out`` is replaced only with ``force`` (and only after the new folder is
    complete). On failure nothing is left under ``out``'s name.

    Raises:
        PrepareError: ``out`` exists and ``force`` is False, or is not a folder.
    """
    check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        atomic_write_text(tmp / SUBMAPS_FILE, _csv_text(build))
        atomic_write_bytes(tmp / TUPLES_FILE, _tuples_bytes(build))
        atomic_write_text(
            tmp / EVALUATION_FILE, json.dumps(build.evaluation.to_dict(), separators=(",", ":"))
        )
        files = {n: sha256_file(tmp / n) for n in (SUBMAPS_FILE, TUPLES_FILE, EVALUATION_FILE)}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "hotformerloc_version": __version__,
            "dataset": build.dataset,
            "source_root": str(build.source_root.resolve()),
            "cloud_format": build.cloud_format,
            "scale": build.scale,
            "options": {k: _jsonable(v) for k, v in options.items()},
            "protocol": {
                "name": build.evaluation.protocol,
                "threshold": build.evaluation.threshold,
                "skip_same_run": build.evaluation.skip_same_run,
                "k": build.evaluation.k,
                "groups": {g: list(m) for g, m in build.evaluation.groups.items()},
            },
            "counts": build.counts(),
            **{k: _jsonable(v) for k, v in build.info.items()},
            "files": files,
        }
        atomic_write_text(tmp / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
        check_output(out, force)
        if out.exists():
            old = out.parent / f".{out.name}.old-{secrets.token_hex(6)}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _jsonable(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


class RowsBuilder:
    """Accumulates submap rows (the :class:`PreparedBuild` columns) block by block."""

    def __init__(self) -> None:
        self._cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("world", "sequence", "timestamp", "xy", "source", "split", "relpath")
        }
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def extend(
        self,
        *,
        world: str,
        sequence: str | Sequence[str],
        timestamp: np.ndarray,
        xy: np.ndarray,
        source: str | Sequence[str],
        split: str | Sequence[str],
        relpath: Sequence[str],
    ) -> np.ndarray:
        """Append ``len(relpath)`` rows; scalars are broadcast. Returns their row indices."""
        n = len(relpath)

        def col(v: str | Sequence[str]) -> np.ndarray:
            return np.full(n, v, dtype=object) if isinstance(v, str) else np.asarray(v, object)

        self._cols["world"].append(col(world))
        self._cols["sequence"].append(col(sequence))
        self._cols["timestamp"].append(np.asarray(timestamp, np.float64).reshape(n))
        self._cols["xy"].append(np.asarray(xy, np.float64).reshape(n, 2))
        self._cols["source"].append(col(source))
        self._cols["split"].append(col(split))
        self._cols["relpath"].append(np.asarray(list(relpath), object))
        rows = np.arange(self._n, self._n + n, dtype=np.int64)
        self._n += n
        return rows

    def column(self, name: str) -> np.ndarray:
        """One column over all rows so far (string columns as object arrays, so that
        callers can assign longer values, e.g. a split)."""
        parts = self._cols[name]
        if name == "xy":
            return np.concatenate(parts) if parts else np.zeros((0, 2))
        if name == "timestamp":
            return np.concatenate(parts) if parts else np.zeros(0)
        return np.concatenate(parts) if parts else np.zeros(0, object)

    def columns(self) -> dict[str, np.ndarray]:
        """All columns, for :class:`PreparedBuild`."""
        return {k: self.column(k) for k in self._cols}
