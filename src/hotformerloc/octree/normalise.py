"""Point normalisation into the octree's [-1, 1]^3 frame (spec 1.1, 1.2).

Pipeline order (Cartesian datasets)::

    bbox_normalise -> augmentations -> filter_to_unit (or clamp_to_unit) -> build_octree

and for cylindrical coordinates (Wild-Places)::

    bbox_normalise -> augmentations -> filter_to_unit(radial=True) -> to_cylindrical
    -> build_octree

The range filter runs after *all* augmentations (the reference filters before its batch-level
rotation, so rotated corner points can leave [-1, 1] and ocnn then computes wrapped keys).
:func:`filter_to_unit` drops what the reference drops (any ``|coordinate| > 1``; with
``radial=True`` also ``sqrt(x^2 + y^2) > 1``). A coordinate exactly equal to 1 is kept (it
happens: :func:`bbox_normalise` in float32 can map the maximum of the longest axis to exactly
+1, the 1e-6 being lost to rounding). Its cell overflows to ``2^d``;
:func:`~hotformerloc.octree.build_octree` either clamps it to the last cell
(``unit_edge="clamp"``, the default) or wraps it to cell 0 of that axis as ocnn does
(``unit_edge="wrap"``). :func:`clamp_to_unit` is the alternative that keeps every point and
clamps into ``[-margin, margin]`` (ocnn's author recommends 0.99; with ``margin < 1`` no cell
overflows).

Every function validates its input: not a tensor, wrong shape or dtype, an empty cloud and
NaN/inf raise :class:`OctreeInputError`. These checks synchronise with the device once per call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hotformerloc.errors import HotformerlocError

FLOAT_DTYPES = (torch.float32, torch.float64)


class OctreeInputError(HotformerlocError):
    """A cloud given to the octree module is unusable.

    The message is ``"<input>: <problem>"``, e.g. ``"build_octree points[2]: 3 non-finite
    coordinates (NaN or inf)"``.

    Attributes:
        name: which input (function and argument, with the sample index for batches).
        problem: what is wrong, without the name.
    """

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"{name}: {problem}")

    def __reduce__(self) -> tuple[type[OctreeInputError], tuple[str, str]]:
        # Two-argument constructor: tell pickle (DataLoader workers) how to rebuild it.
        return (type(self), (self.name, self.problem))


def check_cloud_shape(xyz: object, name: str) -> Tensor:
    """Check that ``xyz`` is a non-empty float32/float64 tensor of shape (N, 3); return it.

    No device synchronisation. Raises :class:`OctreeInputError` naming ``name``.
    """
    if not isinstance(xyz, Tensor):
        raise OctreeInputError(name, f"expected a torch.Tensor, got {type(xyz).__name__}")
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise OctreeInputError(name, f"expected shape (N, 3), got {tuple(xyz.shape)}")
    if xyz.dtype not in FLOAT_DTYPES:
        raise OctreeInputError(name, f"expected dtype float32 or float64, got {xyz.dtype}")
    if xyz.shape[0] == 0:
        raise OctreeInputError(name, "empty cloud (0 points)")
    return xyz


def check_cloud(xyz: object, name: str) -> Tensor:
    """:func:`check_cloud_shape` plus finiteness (one device synchronisation)."""
    xyz = check_cloud_shape(xyz, name)
    bad = int((~torch.isfinite(xyz)).sum())
    if bad:
        raise OctreeInputError(name, f"{bad} non-finite coordinates (NaN or inf)")
    return xyz


def bbox_normalise(xyz: Tensor) -> Tensor:
    """Bounding-box normalisation (the reference's default, spec 1.1).

    ``c = (min + max) / 2`` per axis, ``p' = (p - c) * 2 / (max_axis_extent + 1e-6)``: the
    longest axis spans (just inside) [-1, 1], the others are scaled by the same factor
    (isotropic) and centred. A single point, or all points equal, maps to the origin.

    Args:
        xyz: (N, 3) float32/float64, finite, N >= 1.

    Returns:
        (N, 3), same dtype and device, every coordinate in (-1, 1).
    """
    xyz = check_cloud(xyz, "bbox_normalise xyz")
    lo = xyz.amin(0)
    hi = xyz.amax(0)
    centre = (lo + hi) * 0.5
    scale = 2.0 / ((hi - lo).amax() + 1e-6)
    return (xyz - centre) * scale


def unit_sphere_normalise(xyz: Tensor) -> Tensor:
    """Unit-sphere normalisation (the reference's alternative, spec 1.1).

    Subtracts the centroid (mean point) and divides by the largest distance to it, so the
    farthest point lies on the unit sphere. All points equal maps to the origin.

    Args:
        xyz: (N, 3) float32/float64, finite, N >= 1.

    Returns:
        (N, 3), same dtype and device, norms in [0, 1].
    """
    xyz = check_cloud(xyz, "unit_sphere_normalise xyz")
    centred = xyz - xyz.mean(0)
    radius = torch.linalg.vector_norm(centred, dim=1).amax()
    return centred / radius.clamp_min(torch.finfo(xyz.dtype).tiny)


def clamp_to_unit(xyz: Tensor, margin: float = 0.99) -> Tensor:
    """Clamp every coordinate into ``[-margin, margin]`` (keeps every point).

    The ocnn-recommended alternative to :func:`filter_to_unit`: with ``margin < 1`` no point
    reaches the overflowing value 1, so the builder's ``unit_edge`` choice does not matter.

    Args:
        xyz: (N, 3) float32/float64, finite, N >= 1.
        margin: in (0, 1].

    Returns:
        (N, 3), same dtype and device.
    """
    xyz = check_cloud(xyz, "clamp_to_unit xyz")
    if not 0.0 < margin <= 1.0:
        raise OctreeInputError("clamp_to_unit margin", f"must be in (0, 1], got {margin}")
    return xyz.clamp(-margin, margin)


def filter_to_unit(xyz: Tensor, radial: bool = False) -> tuple[Tensor, Tensor]:
    """Drop points outside the unit cube (the reference's range filter, spec 1.1).

    Keeps points with every ``|coordinate| <= 1``; with ``radial=True`` (cylindrical mode,
    before :func:`to_cylindrical`) also requires ``rho <= 1``, with ``rho`` computed exactly as
    :func:`to_cylindrical` does (``torch.sqrt(x * x + y * y)``), so every kept point has
    ``rho' <= 1`` without clamping. Apply it after all
    augmentations. The result may be empty; :func:`~hotformerloc.octree.build_octree` then
    raises :class:`OctreeInputError`.

    Args:
        xyz: (N, 3) float32/float64, finite, N >= 1.
        radial: also drop points outside the unit cylinder around the z axis.

    Returns:
        ``(kept, keep)``: kept points (M, 3) same dtype/device, and the (N,) bool mask.
    """
    xyz = check_cloud(xyz, "filter_to_unit xyz")
    keep = (xyz.abs() <= 1.0).all(1)
    if radial:
        keep &= _rho(xyz[:, 0], xyz[:, 1]) <= 1.0
    return xyz[keep], keep


def _rho(x: Tensor, y: Tensor) -> Tensor:
    """``sqrt(x^2 + y^2)`` as the reference computes it (not ``hypot``, which rounds
    differently)."""
    return torch.sqrt(x * x + y * y)


def _interp(v: Tensor, x0: float, x1: float, f0: float, f1: float) -> Tensor:
    """``numpy.interp(v, (x0, x1), (f0, f1))`` for increasing ``(x0, x1)``, bit for bit.

    numpy works in float64: ``slope = (f1 - f0) / (x1 - x0)``, ``slope * (v - x0) + f0``,
    ``f0`` below ``x0`` and ``f1`` at or above ``x1``. Returns float64 (cast by the caller).
    """
    slope = (f1 - f0) / (x1 - x0)  # Python floats: float64, as numpy's C code
    v = v.to(torch.float64)
    out = (v - x0).mul_(slope).add_(f0)
    out = torch.where(v < x0, f0, out)
    return torch.where(v >= x1, f1, out)


def to_cylindrical(xyz: Tensor) -> Tensor:
    """Scaled cylindrical coordinates for the octree (spec 1.2), bit-exact with the reference.

    ``rho = sqrt(x^2 + y^2)`` and ``phi = atan2(y, x)`` in the input's dtype (float32 for the
    reference), then ``rho' = interp(rho, [0, 1], [-1, 1])`` and
    ``phi' = interp(phi, [-pi, pi], [-1, 1])`` with numpy's ``interp`` semantics, i.e. in
    float64: ``rho' = 2 * rho - 1`` and ``phi' = (phi + pi) / pi - 1`` (as
    ``slope * (phi + pi) - 1`` with ``slope = 2 / (2 pi)``), cast back to the input's dtype;
    ``z' = z`` unchanged; everything clamped to [-1, 1]. On CPU with float32 input this
    reproduces the reference's ocnn input points bit for bit (checked against the parity
    fixture; note ``torch.sqrt``, not ``hypot``). On CUDA the same ops run, but ``sqrt`` and
    ``atan2`` may round differently from the CPU kernels (last bit).

    The input is meant to have passed ``filter_to_unit(xyz, radial=True)`` (the reference
    drops ``rho > 1`` first); a point with ``rho > 1`` given anyway maps to ``rho' = 1``.
    There is no wrap-around at ``phi = +-pi``: float32 ``atan2`` returns ``+-fl32(pi)``,
    beyond numpy's float64 pi, so ``phi' = +-1`` exactly; ``phi' = 1`` (``y = +0, x < 0``)
    is a unit-edge coordinate (last azimuth cell with ``unit_edge="clamp"``, cell 0 with
    ``"wrap"``).

    Args:
        xyz: (N, 3) float32/float64 Cartesian points, finite, N >= 1.

    Returns:
        (N, 3) ``(rho', phi', z')`` in [-1, 1], same dtype and device.
    """
    xyz = check_cloud(xyz, "to_cylindrical xyz")
    x, y, z = xyz.unbind(1)
    rho = _interp(_rho(x, y), 0.0, 1.0, -1.0, 1.0).to(xyz.dtype)
    phi = _interp(torch.atan2(y, x), -math.pi, math.pi, -1.0, 1.0).to(xyz.dtype)
    return torch.stack([rho, phi, z], 1).clamp_(-1.0, 1.0)
