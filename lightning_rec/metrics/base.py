"""Base for metrics whose value with no data is a defined 0."""

import functools
import warnings
from collections.abc import Callable
from typing import Any

from torchmetrics import Metric


class EmptyIsZeroMetric(Metric):
    """A Metric that computes quietly before any update.

    torchmetrics warns when ``compute`` runs before ``update``. Here no evaluated users is an
    ordinary case (an empty split, a DDP rank with no users, a sanity check) whose answer is 0,
    and the subclasses return 0 for it, so the warning would be noise in every log.
    """

    def _wrap_compute(self, compute: Callable) -> Callable:
        wrapped = super()._wrap_compute(compute)

        @functools.wraps(compute)
        def compute_quietly(*args: Any, **kwargs: Any) -> Any:
            if self.update_called:
                return wrapped(*args, **kwargs)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The ``compute`` method of metric", category=UserWarning)
                return wrapped(*args, **kwargs)

        return compute_quietly
