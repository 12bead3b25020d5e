"""The clustering stage: its plan's stopping rules (driven with assignments the test chooses) and its head."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from scdmac.train import ClusterPlan


def one_hot(labels: list[int], n_clusters: int) -> torch.Tensor:
    q = torch.full((len(labels), n_clusters), 0.1 / (n_clusters - 1))
    q[torch.arange(len(labels)), torch.tensor(labels)] = 0.9
    return q


def plan_with(module, assignments: list[torch.Tensor], **kwargs) -> ClusterPlan:
    """A clustering plan whose refreshes return ``assignments`` in turn, with a stand-in trainer."""
    queue = list(assignments)
    plan = ClusterPlan(module, assign_all=lambda: queue.pop(0), **kwargs)
    plan.trainer = SimpleNamespace(current_epoch=0, should_stop=False, strategy=None)
    plan.log = lambda *args, **kwargs: None  # no Lightning logger outside a fit
    plan.on_train_start()
    return plan


@pytest.fixture
def module(trained):
    return copy.deepcopy(trained.module)


def test_collapse_restores_previous_state_and_stops(module):
    start = one_hot([0] * 10 + [1] * 10 + [2] * 10, 3)
    # after one epoch cluster 2 keeps 3 of its 10 cells: a collapse at fraction 0.5
    merged = one_hot([0] * 10 + [1] * 17 + [2] * 3, 3)
    plan = plan_with(module, [start, merged], collapse_fraction=0.5)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        module.cluster_head.centers.add_(1.0)  # what an epoch of training would change
    plan.on_train_epoch_end()
    assert plan.trainer.should_stop
    assert plan.collapsed_at == 0
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, before[key])
    # the targets stay those of the accepted refresh
    assert (plan.labels == start.argmax(1)).all()


def test_no_collapse_keeps_training(module):
    start = one_hot([0] * 10 + [1] * 10 + [2] * 10, 3)
    moved = one_hot([0] * 10 + [1] * 14 + [2] * 6, 3)  # cluster 2 keeps 60%: a sharpening, not a merge
    plan = plan_with(module, [start, moved], tol=0.0, collapse_fraction=0.5)
    with torch.no_grad():
        module.cluster_head.centers.add_(1.0)
    changed = module.cluster_head.centers.detach().clone()
    plan.on_train_epoch_end()
    assert not plan.trainer.should_stop
    assert plan.collapsed_at is None
    torch.testing.assert_close(module.cluster_head.centers.detach(), changed)
    assert (plan.labels == moved.argmax(1)).all()


def test_collapse_check_is_off_by_default(module):
    start = one_hot([0] * 10 + [1] * 10 + [2] * 10, 3)
    emptied = one_hot([0] * 10 + [1] * 20, 3)
    plan = plan_with(module, [start, emptied], tol=0.0)
    plan.on_train_epoch_end()
    assert not plan.trainer.should_stop and plan.collapsed_at is None


def test_label_change_below_tol_stops(module):
    start = one_hot([0] * 10 + [1] * 10 + [2] * 10, 3)
    plan = plan_with(module, [start, start.clone()], tol=1e-3)
    plan.on_train_epoch_end()
    assert plan.trainer.should_stop and plan.collapsed_at is None


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_bad_collapse_fraction(module, fraction):
    with pytest.raises(ValueError, match="collapse_fraction"):
        ClusterPlan(module, assign_all=lambda: None, collapse_fraction=fraction)


def test_cosine_head_sees_directions_only():
    from scdmac.module import ClusterHead

    head = ClusterHead(2, 3, metric="cosine")
    z = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.5]])
    head.fit_radius(z)
    assert head.radius.item() == 1.0  # the median length
    head.reset(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    # rescaling cells changes nothing: only their directions count
    torch.testing.assert_close(head.soft_assignment(z), head.soft_assignment(z * torch.tensor([[5.0], [0.1], [3.0]])))
    assert head.soft_assignment(z)[:2].argmax(1).tolist() == [0, 1]
    # a Euclidean head on the same centres does depend on the scale
    euclid = ClusterHead(2, 3)
    euclid.reset(head.centers.detach())
    assert not torch.allclose(euclid.soft_assignment(z), euclid.soft_assignment(z * 3))


def test_cluster_head_bad_metric():
    from scdmac.module import ClusterHead

    with pytest.raises(ValueError, match="metric"):
        ClusterHead(2, 3, metric="manhattan")
