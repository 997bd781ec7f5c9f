"""Weights of the official HOTFormerLoc implementation (csiro-robotics/HOTFormerLoc).

The reference writes two kinds of file (layouts recorded in the parity fixtures'
``checkpoint_layout.json``):

* released weights (``.pth``): a flat state dict of its ``HOTFormerLoc`` module, keys
  ``backbone.backbone.*`` and ``pooling.pooling.*``;
* training checkpoints (``.ckpt``): a dict with ``model_state_dict`` (same keys), optimiser
  and scheduler state, and, when trained with an EMA, ``model_ema_state_dict`` (keys
  prefixed ``module.``).

Files are only ever read with ``torch.load(weights_only=True)`` (plus the numpy scalar
globals a ``.ckpt`` needs): a pickle that would run code is refused, never executed.
:func:`convert_reference` maps the keys to ours, checks every key and shape against a
registered variant, and returns a :class:`~hotformerloc.model.checkpoint.Checkpoint` whose
config reproduces the reference's input pipeline (ocnn unit-edge semantics, range filter
``drop``, no input scale).
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hotformerloc.config import to_dict
from hotformerloc.errors import HotformerlocError
from hotformerloc.io.atomic import sha256_file
from hotformerloc.model.checkpoint import Checkpoint, CheckpointError, load_weights, save_checkpoint

if TYPE_CHECKING:
    from hotformerloc.model.network import HOTFormerLoc

#: Commit of the reference implementation whose key layout is mapped here.
REFERENCE_COMMIT = "8e78b2d9bec8399202940e30cc8bb0446a5b9c68"

#: The released paper models (registered names), tried in this order by detection.
PAPER_VARIANTS: tuple[str, ...] = (
    "hotformerloc-oxford",
    "hotformerloc-cs-campus3d",
    "hotformerloc-cs-wild-places",
    "hotformerloc-wild-places",
)

#: File suffixes that :func:`~hotformerloc.model.checkpoint.load_model` treats as reference
#: files (anything else is our safetensors format).
REFERENCE_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".ckpt")

#: Config fields every converted checkpoint gets (before the caller's overrides): the
#: reference feeds clouds as stored, drops points outside the unit cube, and ocnn puts a
#: coordinate of exactly +1 into cell 0 of that axis.
REFERENCE_PIPELINE: dict[str, Any] = {
    "input_scale": None,
    "range_filter": "drop",
    "unit_edge": "wrap",
}


class ReferenceKeyError(HotformerlocError):
    """A reference state-dict key that has no counterpart in our network."""

    def __init__(self, key: str) -> None:
        super().__init__(f"unknown reference key {key!r}")
        self.key = key


# ------------------------------------------------------------------------- key mapping
# (pattern on the key after its ``backbone.backbone.`` / ``pooling.pooling.`` prefix,
# replacement of the module path); the rest of the key is renamed by _LEAF_RENAMES.
_BACKBONE_MODULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"patch_embed\.convs\.0\.", "stem.conv1."),
        (r"patch_embed\.downsamples\.0\.", "stem.down1."),
        (r"patch_embed\.convs\.1\.", "stem.conv2."),
        (r"patch_embed\.downsamples\.1\.", "stem.down2."),
        (r"patch_embed\.proj\.", "stem.proj."),
        (r"octf_stage\.0\.blocks\.(\d+)\.", r"octf_blocks.\1."),
        (r"downsample\.0\.", "downsample."),
        (r"hotf_stage\.downsamples\.(\d+)\.", r"pyramid_downsamples.\1."),
        (r"hotf_stage\.hosa_blocks\.(\d+)\.(\d+)\.", r"hotf_blocks.\2.hosa.\1."),
        (r"hotf_stage\.rtsa_blocks\.(\d+)\.", r"hotf_blocks.\1.rtsa."),
        (r"hotf_stage\.rt_adape\.mlp\.fc1\.", "relay_init.adape.0."),
        (r"hotf_stage\.rt_adape\.mlp\.fc2\.", "relay_init.adape.2."),
        (r"hotf_stage\.relay_tokeniser\.cpe\.", "relay_init.cpe."),
    )
)
_POOLING_MODULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"attpool\.(\d+)\.query$", r"pool.queries.\1"),
        (r"descriptor_extractor\.mix\.(\d+)\.mix\.0\.", r"pool.mixer.\1.norm."),
        (r"descriptor_extractor\.mix\.(\d+)\.mix\.1\.", r"pool.mixer.\1.fc1."),
        (r"descriptor_extractor\.mix\.(\d+)\.mix\.3\.", r"pool.mixer.\1.fc2."),
        (r"descriptor_extractor\.channel_proj\.", "pool.token_proj."),
        (r"descriptor_extractor\.row_proj\.", "pool.channel_proj."),
    )
)
# Parameter names inside a module (exact match on the remainder).
_LEAF_RENAMES: dict[str, str] = {
    "attention.rpe.rpe_table": "rpe.table",
    "conv.weights": "conv.weight",
    "cpe.conv.weights": "cpe.conv.weight",
}
_PREFIXES = (("backbone.backbone.", _BACKBONE_MODULES), ("pooling.pooling.", _POOLING_MODULES))


def map_reference_key(key: str) -> str:
    """Our state-dict key for reference key ``key`` (names only; shapes are not checked).

    Raises:
        ReferenceKeyError: ``key`` is not a key of the reference's HOTFormerLoc module.
    """
    for prefix, modules in _PREFIXES:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        for pattern, repl in modules:
            m = pattern.match(rest)
            if m is None:
                continue
            head = m.expand(repl)
            leaf = rest[m.end() :]
            if not leaf:
                return head
            if leaf in _LEAF_RENAMES:
                return head + _LEAF_RENAMES[leaf]
            if leaf.startswith(("attention.", "rt_attention.")):
                return head + "attn." + leaf.partition(".")[2]
            return head + leaf
    raise ReferenceKeyError(key)


def _is_depthwise(our_key: str, t: Tensor) -> bool:
    return our_key.endswith("cpe.conv.weight") and t.dim() == 3 and t.shape[1] == 1


def reference_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Reference state dict -> our key names (in the input's order); depthwise-conv weights
    (27, 1, C) become (27, C) (a view), every other tensor is passed through unchanged.

    Raises:
        ReferenceKeyError: a key with no counterpart in our network (the first one).
        ValueError: two reference keys map to the same key of ours.
    """
    out: dict[str, Tensor] = {}
    for key, t in state_dict.items():
        ours = map_reference_key(key)
        if ours in out:
            raise ValueError(f"reference keys map twice to {ours!r} (second: {key!r})")
        out[ours] = t.reshape(t.shape[0], t.shape[2]) if _is_depthwise(ours, t) else t
    return out


# ------------------------------------------------------------------------- reading files
def _numpy_safe_globals() -> list[Any]:
    """The numpy globals a pickled ``numpy.float64`` (and similar scalars) needs: the scalar
    reconstructor under its numpy 2 and numpy 1 names, ``numpy.dtype`` and the numeric
    dtype classes. None of them can run code."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]  # numpy 1 name, same function
    out: list[Any] = [
        np.dtype,
        (scalar, "numpy._core.multiarray.scalar"),
        (scalar, "numpy.core.multiarray.scalar"),
    ]
    dtypes = getattr(np, "dtypes", None)
    names = [
        "BoolDType",
        *(f"Int{b}DType" for b in (8, 16, 32, 64)),
        *(f"UInt{b}DType" for b in (8, 16, 32, 64)),
        *(f"Float{b}DType" for b in (16, 32, 64)),
        "LongDType",
        "ULongDType",
        "LongLongDType",
        "ULongLongDType",
        "ByteDType",
        "UByteDType",
        "ShortDType",
        "UShortDType",
        "IntDType",
        "UIntDType",
        "LongDoubleDType",
    ]
    for name in names:
        cls = getattr(dtypes, name, None)
        if cls is not None and cls not in out:
            out.append(cls)
    return out


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _refusal_reason(e: pickle.UnpicklingError) -> str:
    """The useful part of torch's weights-only refusal message (not its advice to allow
    the global)."""
    msg = str(e)
    m = re.search(r"Unsupported global: GLOBAL (\S+)", msg)
    if m:
        return f"it references {m.group(1)}, which is not a weights type"
    _, sep, tail = msg.partition("WeightsUnpickler error:")
    if sep:
        msg = tail.split("Check the documentation", 1)[0]
    return _one_line(msg, 200)


def _safe_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with the numpy scalar globals allowed; every failure
    becomes a :class:`CheckpointError` naming ``path``."""
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a weights file")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_numpy_safe_globals()):
            warnings.simplefilter("ignore")  # e.g. torch's note on the pickle protocol
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise CheckpointError(path, f"refused by safe loading ({_refusal_reason(e)})") from e
    except Exception as e:  # truncated zip, garbage bytes: torch raises many types
        detail = _one_line(str(e), 160) or "no detail"
        raise CheckpointError(
            path,
            f"not a readable PyTorch file, truncated or corrupt ({type(e).__name__}: {detail})",
        ) from e


def _tensor_dict(path: Path, obj: Any, what: str, strip: str = "") -> dict[str, Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"{what} is a {type(obj).__name__}, not a state dict")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(
                path, f"{what}: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        if strip:
            if not key.startswith(strip):
                raise CheckpointError(path, f"{what}: key {key!r} lacks the {strip!r} prefix")
            key = key[len(strip) :]
        out[key] = value
    if not out:
        raise CheckpointError(path, f"{what} is empty")
    return out


def _read(path: str | Path, ema: bool) -> tuple[dict[str, Tensor], str]:
    """(reference state dict, layout ``pth`` | ``ckpt`` | ``ckpt-ema``)."""
    p = Path(path)
    obj = _safe_load(p)
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        if ema:
            if "model_ema_state_dict" not in obj:
                raise CheckpointError(
                    p, "training checkpoint has no EMA weights (model_ema_state_dict); drop --ema"
                )
            ema_sd = obj["model_ema_state_dict"]
            return _tensor_dict(p, ema_sd, "model_ema_state_dict", "module."), "ckpt-ema"
        return _tensor_dict(p, obj["model_state_dict"], "model_state_dict"), "ckpt"
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        if ema:
            raise CheckpointError(
                p, "a flat state dict (.pth) has no EMA copy: --ema needs a training checkpoint"
            )
        return _tensor_dict(p, obj, "state dict"), "pth"
    if isinstance(obj, Mapping):
        keys = ", ".join(repr(k) for k in list(obj)[:5])
        raise CheckpointError(
            p,
            "neither a flat state dict of tensors nor a training checkpoint with "
            f"model_state_dict (top-level keys: {keys or 'none'})",
        )
    raise CheckpointError(p, f"holds a {type(obj).__name__}, not a state dict")


def read_reference_file(path: str | Path, ema: bool = False) -> dict[str, Tensor]:
    """The reference-named state dict of a ``.pth`` (flat state dict) or ``.ckpt`` (training
    checkpoint: ``model_state_dict``; with ``ema`` the ``model_ema_state_dict``, ``module.``
    stripped). The layout is decided from the content, not the file name.

    Raises:
        CheckpointError: missing, truncated or corrupt file; a pickle that safe loading
            refuses (never executed); no state dict in it; ``ema`` without an EMA copy.
    """
    return _read(path, ema)[0]


# ------------------------------------------------------------------------- conversion
_SHAPES_CACHE: dict[str, dict[str, tuple[int, ...]]] = {}


def expected_shapes(
    variant: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, tuple[int, ...]]:
    """Our state-dict shapes of ``variant`` with :data:`REFERENCE_PIPELINE` and ``overrides``
    (built on the meta device: no memory, fast; cached).

    Raises:
        ConfigError: unknown variant or invalid override.
    """
    from hotformerloc.model.registry import create_model

    cfg = {**REFERENCE_PIPELINE, **(overrides or {})}
    key = json.dumps([variant, cfg], sort_keys=True, default=repr)
    if key not in _SHAPES_CACHE:
        with torch.device("meta"):
            model = create_model(variant, **cfg)
        if len(_SHAPES_CACHE) >= 16:
            _SHAPES_CACHE.clear()
        _SHAPES_CACHE[key] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return _SHAPES_CACHE[key]


def fit_problem(
    ref: Mapping[str, Tensor],
    variant: str | Mapping[str, tuple[int, ...]],
    overrides: Mapping[str, Any] | None = None,
) -> str | None:
    """The first reason the reference-named ``ref`` does not fit ``variant`` (a registered
    name, with ``overrides``; or an :func:`expected_shapes` result), walking ``ref`` in its
    order: an unknown key, a key without a parameter, a shape, then a parameter not covered.
    None when every key is consumed and every shape fits (only shapes are looked at).

    Raises:
        ConfigError: unknown variant or invalid override.
    """
    expected = expected_shapes(variant, overrides) if isinstance(variant, str) else variant
    seen: set[str] = set()
    for key, t in ref.items():
        try:
            ours = map_reference_key(key)
        except ReferenceKeyError as e:
            return str(e)
        if ours not in expected:
            return f"reference key {key!r} ({ours}) is not a parameter of this model"
        shape = tuple(t.shape)
        if _is_depthwise(ours, t):
            shape = (shape[0], shape[2])
        if shape != expected[ours]:
            return f"{key}: shape {tuple(t.shape)} does not fit {expected[ours]} ({ours})"
        seen.add(ours)
    missing = [k for k in expected if k not in seen]
    if missing:
        return f"{len(missing)} parameter(s) missing from the file, first {missing[0]!r}"
    return None


def detect_variant(ref: Mapping[str, Tensor], overrides: Mapping[str, Any] | None = None) -> str:
    """The one paper variant (:data:`PAPER_VARIANTS`) that ``ref`` fits exactly.

    Raises:
        ValueError: none fits (each variant's first problem is listed) or several fit
            (identical keys and shapes); the message says to pass ``--variant``.
        ConfigError: invalid override.
    """
    problems: dict[str, str] = {}
    fits: list[str] = []
    for v in PAPER_VARIANTS:
        problem = fit_problem(ref, v, overrides)
        if problem is None:
            fits.append(v)
        else:
            problems[v] = problem
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise ValueError(
            f"the weights fit {len(fits)} variants ({', '.join(fits)}: identical keys and "
            "shapes), cannot tell which: pass --variant"
        )
    detail = "; ".join(f"{v.removeprefix('hotformerloc-')}: {p}" for v, p in problems.items())
    raise ValueError(
        f"fits none of the paper variants, pass --variant NAME ({_one_line(detail, 600)})"
    )


def convert_reference(
    path: str | Path,
    variant: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    ema: bool = False,
) -> Checkpoint:
    """Convert a reference ``.pth`` / ``.ckpt`` into an in-memory :class:`Checkpoint`.

    Every key of the file must map to a parameter of ``variant`` (registered name) with
    ``overrides`` (config fields) applied, with the same shape, and every parameter must be
    covered. ``variant=None`` detects it among :data:`PAPER_VARIANTS` (exactly one must fit).
    The config is the variant's, then :data:`REFERENCE_PIPELINE`, then ``overrides``;
    ``extra["source"]`` records the file name, its SHA-256 (also ``Checkpoint.sha256``), the
    layout, the reference commit and the variant. Weights are float32 CPU tensors in our
    names (floating-point tensors of another precision are cast).

    Raises:
        CheckpointError: naming ``path``: unreadable / refused file (see
            :func:`read_reference_file`), the first key or shape that does not fit (in the
            file's order), a non-float tensor, a failed or ambiguous detection, an unknown
            variant or an invalid override.
    """
    from hotformerloc.model.registry import get_model_config

    p = Path(path)
    ref, layout = _read(p, ema)
    cfg = {**REFERENCE_PIPELINE, **(overrides or {})}
    try:
        if variant is None:
            variant = detect_variant(ref, overrides)
        problem = fit_problem(ref, variant, overrides)
        config = to_dict(get_model_config(variant, **cfg))
    except ValueError as e:  # ConfigError (variant, override) or a failed detection
        raise CheckpointError(p, str(e)) from e
    if problem is not None:
        raise CheckpointError(p, f"does not fit {variant}: {problem}")
    for key, t in ref.items():
        if not t.is_floating_point():
            raise CheckpointError(p, f"{key}: dtype {t.dtype} is not floating point")
    mapped = reference_to_ours(ref)
    state = {
        k: mapped[k].detach().to(torch.float32).contiguous()
        for k in expected_shapes(variant, overrides)
    }
    sha = sha256_file(p)
    source = {
        "file": p.name,
        "sha256": sha,
        "layout": layout,
        "reference_commit": REFERENCE_COMMIT,
        "variant": variant,
    }
    return Checkpoint(state, variant, config, {"source": source}, sha)


def model_from_converted(ck: Checkpoint, path: str | Path) -> HOTFormerLoc:
    """The network of ``ck`` with its weights loaded (train mode, as built)."""
    from hotformerloc.model.registry import create_model

    model = create_model(ck.model, **ck.config)
    load_weights(model, ck, path)
    return model


def load_reference_model(
    path: str | Path, variant: str | None = None, ema: bool = False
) -> tuple[HOTFormerLoc, Checkpoint]:
    """``(model.eval(), checkpoint)`` of a reference file converted in memory."""
    ck = convert_reference(path, variant, ema=ema)
    return model_from_converted(ck, path).eval(), ck


def save_converted(ck: Checkpoint, out: str | Path) -> str:
    """Write ``ck`` as our safetensors checkpoint at ``out`` (atomically); returns the SHA-256
    of the written file. ``load_model(out)`` rebuilds the same model.

    Raises:
        CheckpointError: the weights do not fit ``ck``'s model.
        ConfigError: ``ck.config`` is invalid.
    """
    model = model_from_converted(ck, out)
    return save_checkpoint(out, model, ck.model, ck.config, ck.extra)


__all__ = [
    "PAPER_VARIANTS",
    "REFERENCE_COMMIT",
    "REFERENCE_PIPELINE",
    "REFERENCE_SUFFIXES",
    "ReferenceKeyError",
    "convert_reference",
    "detect_variant",
    "expected_shapes",
    "fit_problem",
    "load_reference_model",
    "map_reference_key",
    "read_reference_file",
    "reference_to_ours",
    "save_converted",
]
