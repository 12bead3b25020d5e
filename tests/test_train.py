"""The clustering stage: stopping rules and re-seeding (driven with embeddings the test chooses) and its head."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from scdmac.module import target_distribution
from scdmac.train import ClusterPlan, Stage

N_LATENT = 16  # the ``trained`` model's embedding width
CLUSTER_STAGE = Stage("cluster", ("masked_ae", "input_norm", "cluster_head"), clustering=True)


def one_hot(labels: list[int], n_clusters: int = 3) -> torch.Tensor:
    """Embeddings of cells that sit on centre ``labels[i]`` (centres are the first unit vectors; see plan_with)."""
    return torch.eye(n_clusters, N_LATENT)[torch.tensor(labels)]


def plan_with(module, embeddings: list[torch.Tensor], **kwargs) -> ClusterPlan:
    """A clustering plan whose refreshes embed the cells as ``embeddings`` in turn, with a stand-in trainer.

    The head's centres are set to the first unit vectors on a sphere of radius one, so that a cell
    embedded as ``one_hot(labels)`` is assigned its label.
    """
    head = module.cluster_head
    with torch.no_grad():
        head.radius.fill_(1.0)
        head.reset(torch.eye(head.n_clusters, N_LATENT))
    queue = list(embeddings)
    plan = ClusterPlan(module, CLUSTER_STAGE, embed_all=lambda: queue.pop(0), **kwargs)
    plan.trainer = SimpleNamespace(current_epoch=0, should_stop=False, strategy=None)
    plan.log = lambda *args, **kwargs: None  # no Lightning logger outside a fit
    plan.on_train_start()
    return plan


@pytest.fixture
def module(trained):
    return copy.deepcopy(trained.module)


def test_collapse_restores_previous_state_and_stops(module):
    start = one_hot([0] * 10 + [1] * 10 + [2] * 10)
    # after one epoch cluster 2 keeps 3 of its 10 cells: a collapse at fraction 0.5
    merged = one_hot([0] * 10 + [1] * 17 + [2] * 3)
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
    assert (plan.labels == torch.tensor([0] * 10 + [1] * 10 + [2] * 10)).all()


def test_no_collapse_keeps_training(module):
    start = one_hot([0] * 10 + [1] * 10 + [2] * 10)
    moved = one_hot([0] * 10 + [1] * 14 + [2] * 6)  # cluster 2 keeps 60%: a sharpening, not a merge
    plan = plan_with(module, [start, moved], tol=0.0, collapse_fraction=0.5)
    with torch.no_grad():
        module.cluster_head.centers.add_(1.0)
    changed = module.cluster_head.centers.detach().clone()
    plan.on_train_epoch_end()
    assert not plan.trainer.should_stop
    assert plan.collapsed_at is None
    torch.testing.assert_close(module.cluster_head.centers.detach(), changed)
    assert (plan.labels == torch.tensor([0] * 10 + [1] * 14 + [2] * 6)).all()


def test_collapse_check_is_off_by_default(module):
    start = one_hot([0] * 10 + [1] * 10 + [2] * 10)
    emptied = one_hot([0] * 10 + [1] * 20)
    plan = plan_with(module, [start, emptied], tol=0.0)
    plan.on_train_epoch_end()
    assert not plan.trainer.should_stop and plan.collapsed_at is None


def test_label_change_below_tol_stops(module):
    start = one_hot([0] * 10 + [1] * 10 + [2] * 10)
    plan = plan_with(module, [start, start.clone()], tol=1e-3)
    plan.on_train_epoch_end()
    assert plan.trainer.should_stop and plan.collapsed_at is None


@pytest.mark.parametrize("balance", [1.0, 0.0])
def test_targets_take_the_plans_size_exponent(module, balance):
    start = one_hot([0] * 20 + [1] * 6 + [2] * 4)
    plan = plan_with(module, [start], target_balance=balance)
    q = module.cluster_head.soft_assignment(start.to(plan.device))
    torch.testing.assert_close(plan.target, target_distribution(q, balance))


def test_bad_target_balance(module):
    with pytest.raises(ValueError, match="target_balance must be at least 0"):
        ClusterPlan(module, CLUSTER_STAGE, embed_all=lambda: None, target_balance=-1.0)


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_bad_collapse_fraction(module, fraction):
    with pytest.raises(ValueError, match="collapse_fraction"):
        ClusterPlan(module, CLUSTER_STAGE, embed_all=lambda: None, collapse_fraction=fraction)


def test_cosine_head_sees_directions_only():
    from scdmac.module import ClusterHead

    head = ClusterHead(2, 3, metric="cosine")
    z = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.5]])
    head.fit_sphere(z)
    assert head.radius.item() == 1.0  # the median length
    head.reset(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    # rescaling cells changes nothing: only their directions count
    torch.testing.assert_close(head.soft_assignment(z), head.soft_assignment(z * torch.tensor([[5.0], [0.1], [3.0]])))
    assert head.soft_assignment(z)[:2].argmax(1).tolist() == [0, 1]
    # a Euclidean head on the same centres does depend on the scale
    euclid = ClusterHead(2, 3)
    euclid.reset(head.centers.detach())
    assert not torch.allclose(euclid.soft_assignment(z), euclid.soft_assignment(z * 3))


def test_cosine_sphere_is_centred_on_the_groups_not_on_the_cells():
    from scdmac.module import ClusterHead

    # a type of 900 cells near (0, 0) and two of 50 near (4, 0) and (0, 4): the cells' mean lies
    # inside the large type, the mean of three k-means centres well outside it
    gen = torch.Generator().manual_seed(0)
    z = torch.cat(
        [
            0.3 * torch.randn(900, 2, generator=gen),
            torch.tensor([4.0, 0.0]) + 0.3 * torch.randn(50, 2, generator=gen),
            torch.tensor([0.0, 4.0]) + 0.3 * torch.randn(50, 2, generator=gen),
        ]
    )
    head = ClusterHead(0, 2, metric="cosine")
    head.fit_sphere(z, n_clusters=3)
    torch.testing.assert_close(head.origin, torch.tensor([4.0, 4.0]) / 3, atol=0.1, rtol=0)
    # seen from there the large type is one narrow bundle of directions; seen from the origin, every direction
    large = head.project(z[:900]) / head.radius
    assert large.mean(0).norm() > 0.95
    head.fit_sphere(z)
    assert head.origin.abs().max() == 0 and (head.project(z[:900]) / head.radius).mean(0).norm() < 0.5
    # a Euclidean head has no sphere to place
    euclid = ClusterHead(0, 2)
    euclid.fit_sphere(z, n_clusters=3)
    assert euclid.origin.abs().max() == 0 and euclid.radius.item() == 1.0


def test_cosine_head_saved_without_a_centre_loads_with_the_origin():
    from scdmac.module import ClusterHead

    head = ClusterHead(3, 2, metric="cosine")
    head.origin.fill_(1.0)
    # a model saved before the sphere had a centre: its state has centres and radius only
    older = {"centers": torch.ones(4, 2), "radius": torch.tensor(2.0)}
    head.load_state_dict(older)
    assert head.n_clusters == 4 and head.radius.item() == 2.0 and head.origin.abs().max() == 0


def test_cluster_head_bad_metric():
    from scdmac.module import ClusterHead

    with pytest.raises(ValueError, match="metric"):
        ClusterHead(2, 3, metric="manhattan")


def test_refill_splits_the_worst_fitting_cluster_for_an_emptied_centre():
    from scdmac.module import ClusterHead

    rng = torch.Generator().manual_seed(0)
    # groups at x=0 and x=10 share centre 0 (at 5); centre 2 holds a third group; centre 1 holds no cell
    z = torch.cat(
        [
            torch.randn(20, 2, generator=rng) * 0.1,
            torch.randn(20, 2, generator=rng) * 0.1 + 10.0,
            torch.randn(20, 2, generator=rng) * 0.1 - 30.0,
        ]
    )
    head = ClusterHead(3, 2)
    head.reset(torch.tensor([[5.0, 5.0], [100.0, 100.0], [-30.0, -30.0]]))
    assert head.refill(z, min_size=2) == [1]
    labels = head.soft_assignment(z).argmax(1)
    assert torch.bincount(labels, minlength=3).tolist() == [20, 20, 20]
    # each group now has a centre of its own
    assert all(labels[i : i + 20].unique().numel() == 1 for i in (0, 20, 40))
    assert labels[40] == 2


def test_refill_leaves_unsplittable_clusters():
    from scdmac.module import ClusterHead

    z = torch.zeros(10, 2)  # every cell identical: nothing to split
    head = ClusterHead(2, 2)
    head.reset(torch.tensor([[0.0, 0.0], [50.0, 50.0]]))
    assert head.refill(z) == []


def test_plan_refills_an_emptied_cluster_and_logs_kept_clusters(module):
    start = one_hot([0] * 10 + [1] * 10 + [2] * 10)
    # DEC drained cluster 2: its cells now lie nearer centre 1, a second group under that centre
    drained = start.clone()
    drained[20:] = torch.nn.functional.normalize(one_hot([1] * 10) + 0.5 * torch.eye(N_LATENT)[5], dim=-1)
    logged = {}
    plan = plan_with(module, [start, drained], tol=0.0)
    plan.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    plan.on_train_epoch_end()
    assert logged["cluster_nonempty"] == 3.0
    assert torch.bincount(plan.labels, minlength=3).tolist() == [10, 10, 10]
    assert plan.n_refilled == 1


def test_plan_without_refill_reports_the_loss(module):
    start = one_hot([0] * 10 + [1] * 10 + [2] * 10)
    drained = start.clone()
    drained[20:] = torch.nn.functional.normalize(one_hot([1] * 10) + 0.5 * torch.eye(N_LATENT)[5], dim=-1)
    logged = {}
    plan = plan_with(module, [start, drained], tol=0.0, refill=False)
    plan.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    plan.on_train_epoch_end()
    assert logged["cluster_nonempty"] == 2.0 and plan.n_refilled == 0


def test_model_warns_when_clusters_are_lost(trained):
    model = copy.deepcopy(trained)
    with torch.no_grad():
        model.module.cluster_head.centers[2] = 1e3  # a centre far from every cell wins none
    model.write_results()  # into the deep copy's own AnnData
    with pytest.warns(UserWarning, match=r"kept 2 of the 3 clusters"):
        model._warn_lost_clusters(min_size=2)
    # the emptied cluster stays a category: categories match the soft matrix's columns
    labels = model.adata.obs["scdmac_cluster"]
    assert list(labels.cat.categories) == ["0", "1", "2"] and (labels == "2").sum() == 0
    assert model.adata.obsm["scdmac_soft"].shape[1] == 3
    assert trained.adata.obs["scdmac_cluster"].nunique() == 3  # the shared model is untouched


def test_a_second_training_appends_its_epochs_after_the_first():
    # keys logged every few epochs keep their epochs: a refresh at epoch 1 of the second run is epoch 5
    from scdmac.model._base import _merge_history

    def frame(epochs, name):
        return pd.DataFrame({name: np.arange(len(epochs), dtype=float)}, index=pd.Index(epochs, name="epoch"))

    first = {"cluster_loss": frame([0, 1, 2, 3], "cluster_loss"), "cluster_label_change": frame([1, 3], "c")}
    second = {"cluster_loss": frame([0, 1], "cluster_loss"), "cluster_label_change": frame([1], "c")}
    merged = _merge_history(first, second)
    assert list(merged["cluster_loss"].index) == [0, 1, 2, 3, 4, 5]
    assert list(merged["cluster_label_change"].index) == [1, 3, 5]


def test_epochs_of_a_stage_are_counted_from_its_logged_loss():
    # under ddp_spawn the parent's trainer runs no loop: the stage's message counts the epochs it logged
    from scdmac.model._base import _epochs_logged

    history = {"mask_loss": pd.DataFrame({"mask_loss": np.zeros(7)}), "cluster_loss": pd.DataFrame({"x": [0.0]})}
    assert _epochs_logged(history, "mask") == 7
    assert _epochs_logged(history, "cluster") == 1
    assert _epochs_logged(history, "denoise") == 0
    assert _epochs_logged(None, "mask") == 0


@pytest.mark.parametrize(
    "model_name, plan_kwargs, expected",
    [("SCDMAC", None, 0.5), ("SCDSEC", None, 1.0), ("SCDMAC", {"target_balance": 1.0}, 1.0)],
)
def test_each_model_sets_the_size_exponent_of_decs_target(monkeypatch, model_name, plan_kwargs, expected):
    # SCDMAC divides DEC's target by the square root of a cluster's size, SCDSEC by the size; a user's
    # plan_kwargs win. The plan records what it was given and stops the training there.
    import functools

    import scdmac
    from scdmac.model import _base

    seen: dict = {}

    class Given(Exception):
        pass

    @functools.wraps(ClusterPlan.__init__)
    def recording_init(self, *args, **kwargs):
        seen.update(kwargs)
        raise Given

    monkeypatch.setattr(_base, "ClusterPlan", type("RecordingPlan", (ClusterPlan,), {"__init__": recording_init}))
    adata = scdmac.data.simulate(n_cells=120, n_genes=40, n_clusters=3, seed=0)
    model_cls = getattr(scdmac.model, model_name)
    model_cls.setup_anndata(adata, layer="counts", n_top_genes=40)
    model = model_cls(adata, n_clusters=3)
    with pytest.raises(Given):
        model.train(stages="cluster", plan_kwargs=plan_kwargs, enable_progress_bar=False)
    assert seen["target_balance"] == expected
