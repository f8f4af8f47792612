"""k-means in torch: segments users by their representations without leaving tensors."""

from __future__ import annotations

import torch


def kmeans(
    x: torch.Tensor, num_clusters: int, iterations: int = 50, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the rows of x [M, D]; returns (assignment LongTensor[M], centroids [num_clusters, D]).

    k-means++ seeding (each new centre drawn with probability proportional to the squared distance
    to the nearest chosen one) then Lloyd iterations; a cluster that empties is re-seeded at the point
    farthest from its centre, so exactly `num_clusters` non-empty segments come back.
    """
    if x.ndim != 2:
        raise ValueError(f"kmeans needs a [M, D] matrix, got shape {tuple(x.shape)}")
    if not 1 <= num_clusters <= len(x):
        raise ValueError(f"num_clusters={num_clusters} must be between 1 and the number of points ({len(x)})")
    x = x.float()
    generator = torch.Generator().manual_seed(seed)
    centroids = x[torch.randint(len(x), (1,), generator=generator)]
    for _ in range(num_clusters - 1):
        nearest = torch.cdist(x, centroids).min(dim=1).values.square()
        weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
        centroids = torch.cat([centroids, x[torch.multinomial(weights, 1, generator=generator)]])
    assignment = torch.full((len(x),), -1, dtype=torch.long)
    for _ in range(iterations):
        distances = torch.cdist(x, centroids)
        new_assignment = distances.argmin(dim=1)
        own = distances.gather(1, new_assignment.unsqueeze(1)).squeeze(1)
        for empty in torch.nonzero(torch.bincount(new_assignment, minlength=num_clusters) == 0).flatten().tolist():
            counts = torch.bincount(new_assignment, minlength=num_clusters)  # rare: at most num_clusters re-seeds
            farthest = own.masked_fill(counts[new_assignment] <= 1, -1.0).argmax()
            new_assignment[farthest] = empty
            own[farthest] = -1.0
        if torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        counts = torch.bincount(assignment, minlength=num_clusters).clamp(min=1).unsqueeze(1).float()
        centroids = torch.zeros_like(centroids).index_add_(0, assignment, x) / counts
    return assignment, centroids
