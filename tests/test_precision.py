"""The default precision, the row-bucketed linear layers it relies on, and what stays float32 under autocast."""

from __future__ import annotations

import pytest
import torch
from scvi.nn import FCLayers
from torch import nn

from scdmac.model import SCDMAC, SCDSEC
from scdmac.module._heads import ClusterHead, ZINBHead
from scdmac.module._nn import ROW_BUCKET, BucketedLinear, ScaleNorm, bucket_linear_rows
from scdmac.train import StagePlan, _precision


@pytest.mark.parametrize("n", [1, ROW_BUCKET - 1, ROW_BUCKET, ROW_BUCKET + 5])
def test_bucketed_linear_matches_linear_under_cpu_autocast(n):
    torch.manual_seed(0)
    plain = nn.Linear(12, 7)
    bucketed = BucketedLinear(12, 7)
    bucketed.load_state_dict(plain.state_dict())
    x = torch.randn(n, 12, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y2 = plain(x), bucketed(x2)
    assert y2.shape == (n, 7) and y2.dtype == y.dtype == torch.bfloat16
    torch.testing.assert_close(y2.float(), y.float(), rtol=2e-2, atol=2e-2)
    y.float().square().sum().backward()
    y2.float().square().sum().backward()
    # the padded rows add nothing to the weights' gradient
    torch.testing.assert_close(bucketed.weight.grad, plain.weight.grad, rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(x2.grad, x.grad, rtol=5e-2, atol=5e-2)


def test_bucketed_linear_is_linear_outside_autocast():
    torch.manual_seed(0)
    layer = BucketedLinear(5, 3)
    x = torch.randn(9, 5)
    assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))


def test_bucket_linear_rows_reaches_scvi_layers_and_keeps_parameter_names():
    net = nn.Sequential(FCLayers(6, 4, n_layers=1), nn.Linear(4, 2), nn.LayerNorm(2))
    names = list(net.state_dict())
    assert bucket_linear_rows(net) is net
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 and all(type(m) is BucketedLinear for m in linears)
    assert list(net.state_dict()) == names


@pytest.mark.parametrize("model_cls", [SCDMAC, SCDSEC])
def test_models_use_bucketed_linear_layers(small, model_cls):
    model_cls.setup_anndata(small)
    model = model_cls(small, n_clusters=3)
    linears = [m for m in model.module.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is BucketedLinear for m in linears)


@pytest.mark.parametrize(
    ("accelerator", "amx", "cuda", "expected"),
    [
        ("cpu", True, False, "bf16-mixed"),
        ("auto", True, False, "bf16-mixed"),
        ("cpu", False, False, "32-true"),
        ("auto", True, True, "32-true"),  # "auto" lands on the GPU
        ("gpu", True, True, "32-true"),
    ],
)
def test_default_precision(monkeypatch, accelerator, amx, cuda, expected):
    monkeypatch.setattr(_precision, "_cpu_multiplies_bfloat16", lambda: amx)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert _precision.default_precision(accelerator) == expected


def test_train_passes_default_precision_unless_given(small, monkeypatch):
    seen = []
    monkeypatch.setattr(SCDMAC, "_run_stage", lambda self, *args, **kwargs: seen.append(kwargs.get("precision")))
    SCDMAC.setup_anndata(small)
    model = SCDMAC(small, n_clusters=3)
    model.train(stages="denoise", enable_progress_bar=False)
    model.train(stages="denoise", enable_progress_bar=False, precision="32-true")
    assert seen == [_precision.default_precision("auto"), "32-true"]


def test_likelihood_embedding_and_assignment_stay_float32_under_autocast():
    torch.manual_seed(0)
    head = ZINBHead(8, 5)
    norm = ScaleNorm(4)
    clusters = ClusterHead(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        params = head(torch.randn(6, 8), torch.ones(6))
        z = norm(nn.Linear(8, 4)(torch.randn(6, 8)))
        q = clusters.soft_assignment(z.bfloat16())
    assert all(params[k].dtype == torch.float32 for k in ("scale", "mu", "theta", "zi_logits"))
    assert z.dtype == torch.float32 and norm.running_mean.dtype == torch.float32
    assert q.dtype == torch.float32


def test_plans_use_the_fused_adam_update_on_cpu(small):
    SCDMAC.setup_anndata(small)
    model = SCDMAC(small, n_clusters=3)
    stage = model.stages[0]
    optimizer = StagePlan(model.module, stage).configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"]
    expected = {id(p) for part in stage.parts for p in getattr(model.module, part).parameters()}
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == expected
