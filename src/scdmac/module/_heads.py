"""Output heads shared by both models: the ZINB likelihood head and the clustering head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi.distributions import ZeroInflatedNegativeBinomial
from torch import nn

from ..data._preprocess import random_rows
from ._nn import full_precision

#: cells drawn at random to place the cosine head's sphere (its centre is a mean of k-means centres)
SPHERE_SAMPLE_CELLS = 50_000


class ZINBHead(nn.Module):
    """Three linear heads mapping a decoder's last hidden layer to ZINB mean, dispersion and dropout.

    Parameters
    ----------
    n_hidden
        Width of the decoder's last hidden layer.
    n_genes
        Number of genes modelled.
    """

    def __init__(self, n_hidden: int, n_genes: int):
        super().__init__()
        self.mean = nn.Linear(n_hidden, n_genes)
        self.dispersion = nn.Linear(n_hidden, n_genes)
        self.dropout = nn.Linear(n_hidden, n_genes)

    def forward(self, h: torch.Tensor, size_factor: torch.Tensor) -> dict[str, torch.Tensor]:
        """ZINB parameters; ``scale`` is the mean at the median library size (the denoised expression)."""
        # the likelihood in float32 also under mixed-precision autocast (lgamma of counts in bfloat16
        # would round them); clamps keep exp/softplus finite in early training and for outlier cells
        scale = torch.exp(full_precision(self.mean(h)).clamp(-15.0, 12.0))
        theta = F.softplus(full_precision(self.dispersion(h))).clamp(1e-4, 1e4)
        return {
            "scale": scale,
            "mu": size_factor.unsqueeze(-1) * scale,
            "theta": theta,
            "zi_logits": full_precision(self.dropout(h)),
        }


def zinb_nll(counts: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Negative ZINB log-likelihood of ``counts`` summed over genes, one value per cell."""
    dist = ZeroInflatedNegativeBinomial(mu=params["mu"], theta=params["theta"], zi_logits=params["zi_logits"])
    return -dist.log_prob(counts).sum(-1)


def target_distribution(q: torch.Tensor, balance: float = 1.0) -> torch.Tensor:
    """DEC's sharpened target ``p_ik ∝ q_ik² / (Σ_i q_ik)^balance`` (``q`` over all cells).

    ``balance = 1`` is DEC's target: dividing by each cluster's soft size moves cells from large
    clusters towards small ones. ``balance = 0`` only sharpens each cell's own assignment, with no
    pull towards clusters of equal size.
    """
    weight = q**2 / q.sum(0).clamp_min(1e-12) ** balance
    return weight / weight.sum(1, keepdim=True)


class ClusterHead(nn.Module):
    """Cluster centres with DEC's Student's t assignment and scDMAC's weighted soft k-means.

    Parameters
    ----------
    n_clusters
        Number of centres (0 while unknown; :meth:`reset` sizes them).
    n_latent
        Embedding dimension.
    dof
        Degrees of freedom ``ν`` of the Student's t kernel.
    inflation
        Sharpening exponent ``α`` of the soft k-means weights.
    metric
        ``"euclidean"``: centres and distances in the embedding itself. ``"cosine"``: in the embedding
        projected onto a sphere (each cell's direction seen from the sphere's ``origin``, scaled to a
        common ``radius``), so that only directions count, as for a cosine kNN graph; the radius keeps
        distances on the embedding's scale. :meth:`fit_sphere` places both.
    """

    radius: torch.Tensor
    origin: torch.Tensor

    def __init__(
        self,
        n_clusters: int,
        n_latent: int,
        dof: float = 1.0,
        inflation: float = 1.0,
        metric: str = "euclidean",
    ):
        super().__init__()
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"metric must be 'euclidean' or 'cosine', not {metric!r}.")
        self.dof = dof
        self.inflation = inflation
        self.metric = metric
        self.centers = nn.Parameter(torch.zeros(n_clusters, n_latent))
        # the sphere's radius and centre for metric="cosine", set from the embedding by fit_sphere (saved
        # with the model)
        self.register_buffer("radius", torch.tensor(1.0))
        self.register_buffer("origin", torch.zeros(n_latent))

    @property
    def n_clusters(self) -> int:
        """Number of centres."""
        return self.centers.shape[0]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # the number of clusters lives in the centres' shape: loading saved centres takes their number
        saved = state_dict.get(prefix + "centers")
        if saved is not None and saved.shape != self.centers.shape:
            self.reset(torch.zeros_like(saved))
        # models saved before the sphere had a centre measured directions from the embedding's origin
        if saved is not None and prefix + "origin" not in state_dict:
            state_dict[prefix + "origin"] = torch.zeros_like(self.origin)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reset(self, centers: torch.Tensor) -> None:
        """Replace the centres (and their number) by ``centers``."""
        self.centers = nn.Parameter(torch.as_tensor(centers, dtype=torch.float32, device=self.centers.device))

    @torch.no_grad()
    def fit_sphere(self, z: torch.Tensor, n_clusters: int | None = None, random_state: int = 0) -> None:
        """For ``metric="cosine"``: place the sphere's centre and radius from the pretrained embedding ``z``.

        The centre is the unweighted mean of the centres of a k-means partition of ``z`` into
        ``n_clusters`` groups (the embedding's own origin when ``n_clusters`` is ``None``), so that
        each group counts once, whatever its size. A type holding half the cells pulls the cells'
        mean, and with it the embedding's origin, towards itself; seen from there, scaling its
        directions to a common radius spreads the type out until k-means cuts it. The radius is the
        median distance of the cells from the centre.

        Parameters
        ----------
        z
            Embedding of every cell.
        n_clusters
            Number of k-means groups whose centres place the sphere's centre.
        random_state
            Seed of the k-means (on at most 50,000 cells drawn at random: the centre is a mean).
        """
        if self.metric != "cosine":
            return
        self.origin.zero_()
        if n_clusters is not None and n_clusters > 1:
            from sklearn.cluster import KMeans

            cells = z.detach().cpu().float().numpy()
            if len(cells) > SPHERE_SAMPLE_CELLS:
                cells = cells[random_rows(len(cells), SPHERE_SAMPLE_CELLS, random_state)]
            centers = KMeans(n_clusters, n_init=20, random_state=random_state).fit(cells).cluster_centers_
            self.origin.copy_(torch.as_tensor(centers.mean(0), dtype=self.origin.dtype))
        self.radius.fill_(float((z.to(self.origin.device) - self.origin).norm(dim=-1).median()))

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """The centres' space: ``z`` itself, or its directions from ``origin`` scaled to ``radius`` (float32)."""
        z = full_precision(z)  # distances to the centres in float32, also under mixed-precision autocast
        if self.metric == "cosine":
            return self.radius * F.normalize(z - self.origin, dim=-1)
        return z

    def squared_distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared distance of each cell to each centre in the head's space, ``(cells, clusters)``."""
        return ((self.project(z).unsqueeze(1) - self.centers.unsqueeze(0)) ** 2).sum(-1)

    def soft_assignment(self, z: torch.Tensor) -> torch.Tensor:
        """Student's t similarity of each cell to each centre, rows summing to one."""
        kernel = (1.0 + self.squared_distances(z) / self.dof) ** (-(self.dof + 1.0) / 2.0)
        return kernel / kernel.sum(1, keepdim=True)

    def kl_loss(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """KL(P‖Q) of each cell's target row ``p`` from its assignment ``q``, one value per cell."""
        return (p * (torch.log(p.clamp_min(1e-12)) - torch.log(q.clamp_min(1e-12)))).sum(-1)

    def soft_kmeans_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Weighted soft k-means ``Σ_k w_ik ||z_i − c_k||²`` with sharpened softmax weights, one value per cell."""
        d2 = self.squared_distances(z)
        # weights act as fixed responsibilities for this step (an EM-style update of the centres)
        w = torch.softmax(-d2.detach() * self.inflation, dim=1)
        return (w * d2).sum(-1)

    @torch.no_grad()
    def refill(self, z: torch.Tensor, min_size: int = 2, random_state: int = 0) -> list[int]:
        """Re-seed centres that hold fewer than ``min_size`` cells by splitting the cluster that fits worst.

        DEC's targets drain small clusters into large ones, and a drained centre never wins cells
        back. Each such centre is moved into the cluster with the largest within-cluster sum of
        squares: a 2-means split of that cluster's cells gives it and the emptied centre new
        positions (a bisecting k-means step, in the head's space). Clusters too small to split are
        left as they are.

        Parameters
        ----------
        z
            Embedding of every cell.
        min_size
            Fewest cells a cluster must hold to count as kept.
        random_state
            Seed of the 2-means splits.

        Returns
        -------
        list of int
            The centres that were moved.
        """
        from sklearn.cluster import KMeans

        zp = self.project(z)
        moved: list[int] = []
        for _ in range(self.n_clusters):
            labels = self.squared_distances(z).argmin(1)  # the Student's t argmax is the nearest centre
            sizes = torch.bincount(labels, minlength=self.n_clusters)
            lost = [c for c in torch.nonzero(sizes < min_size).view(-1).tolist() if c not in moved]
            if not lost:
                break
            misfit = ((zp - self.centers[labels]) ** 2).sum(-1)
            sse = torch.zeros(self.n_clusters, device=z.device).scatter_add_(0, labels, misfit)
            sse[sizes < 2 * min_size] = -1.0  # a split must leave both halves kept
            donor = int(sse.argmax())
            if sse[donor] <= 0:
                break
            cells = zp[labels == donor].cpu().numpy()
            halves = KMeans(2, n_init=3, random_state=random_state).fit(cells).cluster_centers_
            self.centers[donor] = torch.as_tensor(halves[0], dtype=self.centers.dtype, device=z.device)
            self.centers[lost[0]] = torch.as_tensor(halves[1], dtype=self.centers.dtype, device=z.device)
            moved.append(lost[0])
        return moved
