"""Fixtures of the model tests (helpers live in ``model_helpers.py``)."""

from __future__ import annotations

import pytest
import torch
from model_helpers import scene, tiny

from hotformerloc.model import HOTFormerLoc


@pytest.fixture(scope="module")
def tiny_model() -> HOTFormerLoc:
    return tiny().eval()


@pytest.fixture(scope="module")
def clouds() -> list[torch.Tensor]:
    return [scene(1500 + 300 * i, seed=i) for i in range(3)]
