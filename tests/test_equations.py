"""One test per equation of the methods: each against a hand computation, not against itself."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy.special import expit, gammaln

from scdmac.module import ClusterHead, FusionEncoder, target_distribution, zinb_nll
from scdmac.module._masked_ae import masked_reconstruction_loss
from scdmac.train import RelativePlateau


def test_target_distribution_is_decs_sharpened_q():
    q = torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.1, 0.9]])
    f = q.sum(0)  # soft cluster frequencies
    expected = (q**2 / f) / (q**2 / f).sum(1, keepdim=True)
    p = target_distribution(q)
    torch.testing.assert_close(p, expected)
    assert_allclose(p.sum(1).numpy(), 1.0, rtol=1e-6)
    # confident rows get more confident
    assert p[0, 0] > q[0, 0] and p[2, 1] > q[2, 1]


def test_target_balance_sets_the_pull_towards_equal_cluster_sizes():
    # nine cells sure of a large cluster, one cell undecided between it and a small one
    q = torch.tensor([[0.9, 0.1]] * 9 + [[0.5, 0.5]])
    undecided = q[-1]
    dec = target_distribution(q, balance=1.0)
    torch.testing.assert_close(dec, target_distribution(q))
    assert dec[-1, 1] > undecided[1]  # DEC moves the undecided cell towards the small cluster
    plain = target_distribution(q, balance=0.0)
    torch.testing.assert_close(plain, q**2 / (q**2).sum(1, keepdim=True))
    assert plain[-1, 1] == pytest.approx(0.5)  # without the size prior it stays undecided
    half = target_distribution(q, balance=0.5)
    assert plain[-1, 1] < half[-1, 1] < dec[-1, 1]
    for p in (dec, plain, half):
        assert_allclose(p.sum(1).numpy(), 1.0, rtol=1e-6)


def test_student_t_assignment():
    head = ClusterHead(2, 2, dof=1.0)
    head.reset(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    d2 = np.array([[0.0, 25.0], [25.0, 0.0], [1.0, 20.0]])
    kernel = 1.0 / (1.0 + d2)  # ν = 1: (1 + d²/ν)^(-(ν+1)/2) = 1 / (1 + d²)
    assert_allclose(head.soft_assignment(z).detach().numpy(), kernel / kernel.sum(1, keepdims=True), rtol=1e-6)


def test_kl_and_soft_kmeans_per_cell():
    head = ClusterHead(2, 1, inflation=2.0)
    head.reset(torch.tensor([[0.0], [2.0]]))
    z = torch.tensor([[0.5], [2.0]])
    d2 = np.array([[0.25, 2.25], [4.0, 0.0]])
    w = np.exp(-2.0 * d2) / np.exp(-2.0 * d2).sum(1, keepdims=True)
    assert_allclose(head.soft_kmeans_loss(z).detach().numpy(), (w * d2).sum(1), rtol=1e-6)
    q = np.array([[0.7, 0.3], [0.2, 0.8]])
    p = np.array([[0.9, 0.1], [0.1, 0.9]])
    kl = head.kl_loss(torch.tensor(q, dtype=torch.float32), torch.tensor(p, dtype=torch.float32))
    assert_allclose(kl.numpy(), (p * np.log(p / q)).sum(1), rtol=1e-5)


def test_zinb_nll_matches_the_closed_form():
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(5, 4)).astype(np.float32)
    counts[0, :2] = 0
    mu = rng.uniform(0.5, 5, size=(5, 4))
    theta = rng.uniform(0.5, 3, size=(5, 4))
    logits = rng.normal(size=(5, 4))
    pi = expit(logits)
    log_nb = (
        gammaln(counts + theta)
        - gammaln(theta)
        - gammaln(counts + 1)
        + theta * np.log(theta / (theta + mu))
        + counts * np.log(mu / (theta + mu))
    )
    log_p = np.where(counts == 0, np.log(pi + (1 - pi) * np.exp(log_nb)), np.log(1 - pi) + log_nb)
    params = {
        k: torch.tensor(v, dtype=torch.float32) for k, v in {"mu": mu, "theta": theta, "zi_logits": logits}.items()
    }
    assert_allclose(zinb_nll(torch.from_numpy(counts), params).numpy(), -log_p.sum(1), rtol=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_fusion_mixes_the_branches_by_alpha(alpha):
    torch.manual_seed(0)
    enc = FusionEncoder(4, hidden_widths=(), n_latent=3, alpha=alpha).eval()  # one linear fused layer
    x = torch.randn(3, 4)
    # a path graph 0-1-2, normalised with self-loops
    A = torch.tensor([[1.0, 1, 0], [1, 1, 1], [0, 1, 1]])
    d = A.sum(1).rsqrt()
    adj_dense = d[:, None] * A * d[None, :]
    out = enc(x, adj_dense.to_sparse())
    h = enc.ae[0](x) if enc.ae is not None else 0.0
    g = adj_dense @ enc.gcn[0](x) if enc.gcn is not None else 0.0
    torch.testing.assert_close(out, alpha * h + (1 - alpha) * g)
    # α = 1 ignores the graph; any α < 1 depends on it
    out_alone = enc(x, torch.eye(3).to_sparse())
    assert torch.allclose(out, out_alone) == (alpha == 1.0)


def test_layerwise_fusion_feeds_the_fused_layer_on():
    torch.manual_seed(0)
    x, adj = torch.randn(3, 4), torch.eye(3).to_sparse()
    fused = FusionEncoder(4, (5,), 2, alpha=0.5, layerwise=True).eval()
    apart = FusionEncoder(4, (5,), 2, alpha=0.5, layerwise=False).eval()
    apart.load_state_dict(fused.state_dict())
    f1 = 0.5 * fused._act(fused.ae[0](x), 0) + 0.5 * fused._act(fused.gcn[0](x), 0)
    torch.testing.assert_close(fused(x, adj), 0.5 * fused.ae[1](f1) + 0.5 * fused.gcn[1](f1))
    h1, g1 = fused._act(fused.ae[0](x), 0), fused._act(fused.gcn[0](x), 0)
    torch.testing.assert_close(apart(x, adj), 0.5 * fused.ae[1](h1) + 0.5 * fused.gcn[1](g1))


def test_fused_layers_follow_the_equations_through_widening_and_narrowing_layers():
    # F_l = α act(W_l F) + (1-α) act(Â F U_l) at every layer; a widening layer computes (Â F) U, the same
    # numbers to float rounding, and passes on F (the narrower side) as what neighbours contribute
    torch.manual_seed(0)
    enc = FusionEncoder(4, (6, 3, 8), 2, alpha=0.3).eval()
    x = torch.randn(5, 4)
    A = (torch.rand(5, 5) > 0.5).float()
    A = ((A + A.T) > 0).float().fill_diagonal_(1.0)
    d = A.sum(1).rsqrt()
    adj = d[:, None] * A * d[None, :]
    f = x
    for i in range(4):
        h, g = enc.ae[i](f), adj @ enc.gcn[i](f)
        if i < 3:
            h, g = enc._act(h, i), enc._act(g, i)
        f = 0.3 * h + 0.7 * g
    products: list[torch.Tensor] = []
    with torch.inference_mode():
        out = enc(x, adj.to_sparse(), products=products)
    torch.testing.assert_close(out, f.detach(), rtol=1e-5, atol=1e-6)
    # widening layers (4 → 6, 3 → 8) hand on their input, the others F U
    assert [p.shape[1] for p in products] == [4, 3, 3, 2]


def test_masked_reconstruction_weights():
    target = torch.zeros(1, 4)
    x_hat = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    logits = torch.tensor([[5.0, -5.0, 0.0, 0.0]])
    lam, gamma = 0.7, 0.65
    rec = (lam * (1 + 4) + (1 - lam) * (9 + 16)) / 4
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, mask).item()
    out = masked_reconstruction_loss({"x_hat": x_hat, "mask_logits": logits}, target, mask, lam, gamma)
    assert out["reconstruction"].item() == pytest.approx(rec)
    assert out["mask_bce"].item() == pytest.approx(bce, rel=1e-5)
    assert out["loss"].item() == pytest.approx(gamma * bce + (1 - gamma) * rec, rel=1e-5)
    # without a mask predictor the reconstruction is the whole loss; λ = 0.5 weighs every entry alike
    plain = masked_reconstruction_loss({"x_hat": x_hat}, target, mask, 0.5, gamma)
    assert plain["loss"].item() == pytest.approx(0.5 * 30 / 4) and "mask_bce" not in plain


def _run_plateau(losses, **kwargs) -> int | None:
    """Epoch (1-based) at which the callback stops a run with these epoch losses, or None."""
    stop = RelativePlateau("loss", **kwargs)
    trainer = SimpleNamespace(callback_metrics={}, current_epoch=0, should_stop=False)
    for epoch, value in enumerate(losses):
        trainer.callback_metrics["loss"], trainer.current_epoch = torch.tensor(value), epoch
        stop.on_train_epoch_end(trainer, None)
        if trainer.should_stop:
            return epoch + 1
    return None


def test_relative_plateau_stops_after_patience_epochs_without_relative_gain():
    # improves by 10% a step, then by 0.01%: stops `patience` epochs into the plateau
    losses = [100 * 0.9**i for i in range(5)] + [100 * 0.9**4 * (1 - 1e-4 * i) for i in range(1, 20)]
    assert _run_plateau(losses, rel_tol=1e-3, patience=3) == 8
    # the same absolute drops on a loss 1000 times smaller still count as relative gains
    assert _run_plateau([1e-3 * 0.9**i for i in range(30)], rel_tol=1e-3, patience=3) is None
    # never before min_epochs (default: patience)
    assert _run_plateau([5.0] * 6, rel_tol=1e-3, patience=2, min_epochs=5) == 5
    with pytest.raises(ValueError, match="patience"):
        RelativePlateau("loss", patience=0)


def test_relative_plateau_counts_only_epochs_where_the_metric_was_computed():
    # a validation loss checked every 5th epoch stays in callback_metrics in between: those epochs say
    # nothing, so three checks without gain (not three epochs) end the run
    stop = RelativePlateau("val", rel_tol=1e-3, patience=3, min_epochs=1)
    trainer = SimpleNamespace(callback_metrics={}, current_epoch=0, should_stop=False)
    for epoch in range(40):
        if epoch % 5 == 0:
            trainer.callback_metrics["val"] = torch.tensor(10.0)
        trainer.current_epoch = epoch
        stop.on_train_epoch_end(trainer, None)
        if trainer.should_stop:
            break
    assert trainer.current_epoch == 15
