"""tq configuration: typed, frozen settings and ``load()`` from YAML, ``TQ_*`` env and overrides.

Only the CLI (and tests) call ``load()``; everything else receives a ``Settings`` or a section.
``config.example.yml`` at the repository root documents every key.
"""

from tq.config.fields import LogFormat, LogLevel, Pool, SyncMode
from tq.config.loader import dump, load, setting_keys
from tq.config.model import (
    ApiSettings,
    AuthSettings,
    BrokerSettings,
    MonitoringSettings,
    PersistenceSettings,
    RaftMember,
    RaftSettings,
    Settings,
    WorkerSettings,
)
from tq.config.sources import CONFIG_ENV

__all__ = [
    "CONFIG_ENV",
    "ApiSettings",
    "AuthSettings",
    "BrokerSettings",
    "LogFormat",
    "LogLevel",
    "MonitoringSettings",
    "PersistenceSettings",
    "Pool",
    "RaftMember",
    "RaftSettings",
    "Settings",
    "SyncMode",
    "WorkerSettings",
    "dump",
    "load",
    "setting_keys",
]
