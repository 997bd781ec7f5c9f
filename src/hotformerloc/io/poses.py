"""The ``poses.csv`` table of our benchmark layout (and of the CS-Wild-Places release).

One row per submap or scan: ``timestamp,x,y,z,qx,qy,qz,qw`` (seconds; translation in
metres; unit quaternion, scalar last), the pose mapping that frame into the map frame.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

#: Column order of a ``poses.csv``.
POSE_COLUMNS = ("timestamp", "x", "y", "z", "qx", "qy", "qz", "qw")


def csv_text(header: Sequence[str], rows: Iterable[Iterable[object]]) -> str:
    """A CSV document (``\\n`` line ends): ``header``, then ``rows``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def poses_csv_text(
    rows: Iterable[tuple[float, Sequence[float], Sequence[float]]],
) -> str:
    """``poses.csv`` text from ``(timestamp, (x, y, z), (qx, qy, qz, qw))`` rows: timestamp
    and translation with 6 decimals, quaternion with 9."""
    return csv_text(
        POSE_COLUMNS,
        ([f"{ts:.6f}", *(f"{v:.6f}" for v in t), *(f"{v:.9f}" for v in q)] for ts, t, q in rows),
    )
