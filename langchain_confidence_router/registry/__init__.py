"""Threshold registry: versioned tuned configurations with approvals and promotions, followed by replicas.

``store`` holds the tables and the operator actions (``confidence-router registry ...``); ``client``
is the replica side, a background poller a cascade subscribes to when its configuration has a
``registry:`` section. Importing this package only registers that hook; SQLAlchemy is imported when
a configuration first uses a registry.
"""

from __future__ import annotations

from ..core.config import RouterConfig
from ..core.engine import ThresholdSource, register_threshold_source


def threshold_source(config: RouterConfig) -> ThresholdSource:
    from .client import client_for

    return client_for(config)


register_threshold_source(threshold_source)

__all__ = ["threshold_source"]
