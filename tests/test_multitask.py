"""Multi-task heads (flowstore/heads/multitask.py): the loss mask, joint training on two tiny
synthetic datasets, and fine-tuning from another dataset's head."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flowstore.heads.evaluate import metrics
from flowstore.heads.models import build_head
from flowstore.heads.multitask import load_matching, multitask_loss, task_scores, train_multitask

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_a_batch_of_dataset_b_gives_dataset_a_layer_zero_gradient():
    torch.manual_seed(0)
    head = build_head("multitask", in_dim=8, num_classes=5, num_segments=2, task_classes=[3, 2], hidden=6, dropout=0.0)
    x = torch.randn(4, 2, 8)
    loss = multitask_loss(head(x), torch.tensor([0, 1, 1, 0]), torch.ones(4, dtype=torch.long), [3, 2])
    loss.backward()
    a, b = head.outputs
    assert a.weight.grad is None or torch.count_nonzero(a.weight.grad) == 0
    assert torch.count_nonzero(b.weight.grad) > 0 and torch.count_nonzero(head.body[0].weight.grad) > 0
    # and the loss of B's samples is B's own 2-way cross-entropy, whatever A's logits are
    logits = head(x).detach()
    want = torch.nn.functional.cross_entropy(logits[:, 3:], torch.tensor([0, 1, 1, 0]))
    assert torch.allclose(multitask_loss(logits, torch.tensor([0, 1, 1, 0]), torch.ones(4, dtype=torch.long), [3, 2]), want)


def _dataset(rng, n_classes, n, means):
    y = np.arange(n) % n_classes
    return (means[y][:, None, None, :] + rng.normal(0, 0.7, (n, 2, 3, means.shape[1]))).astype(np.float32), y


def test_two_datasets_train_jointly_with_per_dataset_metrics():
    rng = np.random.default_rng(0)
    means_a, means_b = rng.normal(0, 1, (4, 16)), rng.normal(0, 1, (3, 16))
    (xa, ya), (xb, yb) = _dataset(rng, 4, 80, means_a), _dataset(rng, 3, 60, means_b)
    (ta, tya), (tb, tyb) = _dataset(rng, 4, 40, means_a), _dataset(rng, 3, 30, means_b)
    model, hist = train_multitask([xa, xb], [ya, yb], [4, 3], hidden=32, dropout=0.0, epochs=30, lr=1e-2)
    assert model.config["task_classes"] == [4, 3] and hist["train_loss"][-1] < hist["train_loss"][0]
    pa, pb = task_scores(model, ta, 0), task_scores(model, tb, 1)
    assert pa.shape == (40, 4) and pb.shape == (30, 3) and np.allclose(pb.sum(1), 1, atol=1e-5)
    assert metrics(pa, tya, list("abcd"))["top1"] >= 0.95 and metrics(pb, tyb, list("xyz"))["top1"] >= 0.95


def test_fine_tuning_copies_the_body_and_keeps_a_fresh_output_layer():
    rng = np.random.default_rng(1)
    means = rng.normal(0, 1, (4, 16))
    x, y = _dataset(rng, 4, 40, means)
    src, _ = train_multitask([x], [y], [4], hidden=32, dropout=0.0, epochs=5, lr=1e-2)
    dst = build_head("multitask", in_dim=16, num_classes=3, num_segments=3, task_classes=[3], hidden=32)
    copied = load_matching(dst, src.state_dict())
    assert copied == ["body.0.bias", "body.0.weight"]
    assert torch.equal(dst.body[0].weight, src.body[0].weight)
    other = build_head("multitask", in_dim=8, num_classes=3, num_segments=3, task_classes=[3], hidden=16)
    with pytest.raises(ValueError, match="init-from"):
        load_matching(other, src.state_dict())
