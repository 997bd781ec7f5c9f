"""Training and model evaluation on a prepared dataset: the trainer takes the prepared
tuples, scale and protocol; embedding only the evaluation rows equals embedding all rows."""

import numpy as np
import pytest
import torch
from prepare_fixtures import make_oxford, oxford_regions

from hotformerloc import create_model
from hotformerloc.config import from_dict
from hotformerloc.data.prepare import PrepareOptions, prepare_dataset
from hotformerloc.data.prepared import PreparedDataset
from hotformerloc.eval import DescriptorRetriever
from hotformerloc.eval.benchmark import embed_benchmark
from hotformerloc.eval.prepared import evaluate_prepared, evaluate_prepared_model, evaluation_rows
from hotformerloc.model.checkpoint import load_checkpoint, load_model
from hotformerloc.train.config import TrainConfig
from hotformerloc.train.trainer import Trainer


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("ox-train")
    root = make_oxford(base / "benchmark_datasets")
    regions = oxford_regions(base / "regions.json")
    prepare_dataset("oxford", root, base / "out", PrepareOptions(regions=regions))
    return base / "out"


def test_evaluation_rows_fast_path_equals_all_rows(prepared):
    ds = PreparedDataset.load(prepared)
    rows = evaluation_rows(ds)
    assert 0 < len(rows) < len(ds)  # training-only rows are not embedded
    torch.manual_seed(0)
    model = create_model("hotformerloc-tiny", grad_checkpoint=False).eval()
    fast = evaluate_prepared_model(model, ds, batch_size=4)
    full = evaluate_prepared(DescriptorRetriever(embed_benchmark(model, ds, None)), ds)
    np.testing.assert_allclose(fast.recall, full.recall)
    assert (fast.mrr, fast.recall_1pct) == pytest.approx((full.mrr, full.recall_1pct))


def test_trainer_uses_the_prepared_tuples_scale_and_protocol(prepared, tmp_path):
    ds = PreparedDataset.load(prepared)
    cfg = from_dict(
        TrainConfig,
        {
            # radii and scale are the prepared set's; these must be ignored
            "model_overrides": {"grad_checkpoint": False, "input_scale": 0.5},
            "data": {"root": str(prepared), "pos_radius": 1.0, "neg_radius": 1.0},
            "batch_size": 4,
            "batch_split_size": 2,
            "val_batch_size": 4,
            "epochs": 1,
            "warmup_epochs": 0,
            "milestones": [],
            "seed": 1,
        },
    )
    trainer = Trainer(cfg, tmp_path / "run")
    np.testing.assert_array_equal(trainer.train_index, ds.train_index)
    for a, b in zip(trainer.tuples.positives, ds.tuples.positives, strict=True):
        np.testing.assert_array_equal(a, b)
    res = trainer.fit()
    ck = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert ck.config["input_scale"] == ds.scale == 1.0  # the dataset's units, with the model
    model, _ = load_model(str(tmp_path / "run" / "last.safetensors"))
    again = evaluate_prepared_model(model, ds, batch_size=4)
    assert res.log[-1]["val_ar1"] == pytest.approx(round(again.r1, 4))


def test_reference_batching_embeds_each_set_on_its_own(prepared, monkeypatch):
    """With the reference's batch-wide windows a descriptor depends on its batch, so each
    evaluation set is embedded alone, in its order, in batches from its first submap (as
    the reference's evaluation); with batch 1 both modes agree."""
    import dataclasses

    from hotformerloc.eval import prepared as module

    ds = PreparedDataset.load(prepared)
    torch.manual_seed(0)
    model = create_model("hotformerloc-tiny", grad_checkpoint=False).eval()
    seen = {}

    def capture(retriever, dataset, k=None):
        seen["desc"] = retriever.descriptors
        return evaluate_prepared(retriever, dataset, k)

    monkeypatch.setattr(module, "evaluate_prepared", capture)
    ref = dataclasses.replace(model.config, window_batching="reference")
    model.config = ref
    evaluate_prepared_model(model, ds, batch_size=3)
    got = seen["desc"]
    runs = [r for loc in ds.evaluation.locations for r in loc.runs]
    for run in runs:
        rows = np.asarray(run.rows, np.int64)
        np.testing.assert_allclose(got[rows], embed_benchmark(model, ds, rows, 3), atol=1e-6)
    single = evaluate_prepared_model(model, ds, batch_size=1)
    model.config = dataclasses.replace(ref, window_batching="per_sample")
    plain = evaluate_prepared_model(model, ds, batch_size=1)
    np.testing.assert_allclose(single.recall, plain.recall)
