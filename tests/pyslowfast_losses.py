"""PySlowFast's contrastive losses (`slowfast/models/contrastive.py`, CONTRASTIVE.SEQUENTIAL=True), in float64
PyTorch, for the fidelity tests.

Written from the official code's structure, not from stjax's: `contrastive_forward` loops over the ρ clips; for
BYOL and MoCo clip k is the query against the keys of the other clips (one loss per query, `backward()` each, so
the gradient is that of their sum); for SimCLR and SwAV the model is called on the two clips (k, k+1) for
k = 0 … ρ−2 and those ρ−1 losses are summed the same way. The momentum encoder's keys and the queue are inputs
here (no gradient flows into them there either). Clips are [B, ρ, D] tensors; each function returns the sum
that the official backward passes differentiate.
"""
import torch
import torch.nn.functional as F


def _l2(x):
    return x / x.pow(2).sum(1, keepdim=True).pow(0.5)  # contrastive.Normalize


def byol(predictions, keys, temperature=0.5):
    """Σ_k over query clips of mean_{j≠k} sim_loss(p_k, z_j); sim_loss = −mean_b(p̂·ẑ)/T (BYOL config T=0.5)."""
    rho = predictions.shape[1]
    total = 0.0
    for k in range(rho):
        p = _l2(predictions[:, k])
        others = [_l2(keys[:, j]) for j in range(rho) if j != k]
        loss = -(p * others[0]).sum(1).div(temperature).mean()
        for key in others[1:]:
            loss = loss + -(p * key).sum(1).div(temperature).mean()
        total = total + loss / len(others)
    return total


def moco(queries, keys, queue, temperature=0.1):
    """Σ_k over query clips of cross_entropy(mean) of the rows [q·k_j, q·queue] / T, j ≠ k, target 0."""
    rho = queries.shape[1]
    total = 0.0
    for k in range(rho):
        q = _l2(queries[:, k])
        queue_neg = torch.einsum("nc,kc->nk", q, queue)
        logits = torch.cat([torch.cat([torch.einsum("nc,nc->n", q, _l2(keys[:, j])).unsqueeze(-1), queue_neg], 1)
                            for j in range(rho) if j != k], 0) / temperature
        total = total + F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
    return total


def simclr(embeddings, temperature=0.1):
    """Σ_k over consecutive pairs (k, k+1) of the 2B-sample NT-Xent (the non-distributed branch)."""
    total = 0.0
    for k in range(embeddings.shape[1] - 1):
        q, q2 = _l2(embeddings[:, k]), _l2(embeddings[:, k + 1])
        out = torch.cat([q, q2], 0)
        sim_matrix = torch.exp(out @ out.t() / temperature)
        mask = (torch.ones_like(sim_matrix) - torch.eye(out.shape[0], dtype=sim_matrix.dtype)).bool()
        sim_matrix = sim_matrix.masked_select(mask).view(out.shape[0], -1)
        pos_sim = torch.exp((q * q2).sum(-1) / temperature)
        pos_sim = torch.cat([pos_sim, pos_sim], 0)
        total = total + (-torch.log(pos_sim / sim_matrix.sum(-1))).mean()
    return total


def sinkhorn(scores, epsilon=0.05, iterations=3):
    """`ContrastiveModel.sinkhorn` on Q = exp(scores / ε): scores [B, K] → codes [B, K]."""
    with torch.no_grad():
        q = torch.exp(scores / epsilon).t()  # K x B
        q /= q.sum()
        r = torch.ones(q.shape[0], dtype=q.dtype) / q.shape[0]
        c = torch.ones(q.shape[1], dtype=q.dtype) / q.shape[1]
        for _ in range(iterations):
            q *= (r / q.sum(1)).unsqueeze(1)
            q *= (c / q.sum(0)).unsqueeze(0)
        return (q / q.sum(0, keepdim=True)).t()


def swav(scores, temperature=0.1, epsilon=0.05, iterations=3):
    """Σ_k over consecutive pairs of the public-code SwAV loss of clips (k, k+1): codes of each clip by
    Sinkhorn over the batch, each predicted by the other clip's softmax(scores / T), the two terms averaged.
    `scores` [B, ρ, K]: the prototype layer's outputs (cosines of normalised projections and prototypes)."""
    total = 0.0
    for k in range(scores.shape[1] - 1):
        clips = [scores[:, k], scores[:, k + 1]]
        loss = 0.0
        for crop_id in range(2):
            q = sinkhorn(clips[crop_id].detach(), epsilon, iterations)
            p = F.softmax(clips[1 - crop_id] / temperature, dim=1)
            loss = loss - torch.mean(torch.sum(q * torch.log(p), dim=1))  # subloss / (n_clips − 1), n_clips = 2
        total = total + loss / 2
    return total


def parameter_update_skipped(cur_iter: int, epoch_exact: float, queue_len: int, batch_size: int,
                             num_shards: int) -> bool:
    """`contrastive_parameter_surgery` for MoCo: no optimiser step while the queue first fills."""
    iters_noupdate = queue_len // batch_size // num_shards
    return cur_iter < iters_noupdate and epoch_exact < 1
