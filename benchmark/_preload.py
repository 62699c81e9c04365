"""Imported once by the fork server of plugin processes: what every plugin process would otherwise
import (or warm up) again, each time, at its first use."""

import torch

from disguisebench import registry

registry.names("defense")


def _warm_up() -> None:
    # One thread: the fork server must not start a thread pool its children would inherit.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # An optimizer's first construction imports torch._dynamo (about a second).
        param = torch.nn.Parameter(torch.zeros(2))
        torch.optim.Adam([param]).step()
        from scipy.optimize import linear_sum_assignment  # noqa: F401 - used by several attacks
        from sklearn.linear_model import LogisticRegression  # noqa: F401
        from sklearn.pipeline import make_pipeline  # noqa: F401
        from sklearn.preprocessing import StandardScaler  # noqa: F401
    finally:
        torch.set_num_threads(threads)


_warm_up()
