"""Auth at broker start: create the bootstrap admin key of a data dir that holds none (from
auth.bootstrap_key_file, else ``$TQ_BOOTSTRAP_API_KEY``, else a new one written to
<data_dir>/bootstrap-admin.key, 0600).
The secret is never logged: only the key id and where the secret is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from tq.broker import keyadmin
from tq.broker.access import new_secret
from tq.broker.service import BrokerService
from tq.config import Settings
from tq.errors import ConfigError, TqError
from tq.protocol.records import KeySpec

log = logging.getLogger(__name__)

BOOTSTRAP_ENV: Final = "TQ_BOOTSTRAP_API_KEY"
BOOTSTRAP_FILE: Final = "bootstrap-admin.key"
BOOTSTRAP_NAME: Final = "bootstrap"


def _given_secret(settings: Settings, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(secret, where it came from) when one is given."""
    path = settings.auth.bootstrap_key_file
    if path is not None:
        try:
            return path.read_text().strip(), f"auth.bootstrap_key_file {path}"
        except OSError as e:
            raise ConfigError(
                f"auth.bootstrap_key_file {path}: cannot read it ({e.strerror or e})"
            ) from e
    secret = environ.get(BOOTSTRAP_ENV, "").strip()
    if secret:
        return secret, f"environment variable {BOOTSTRAP_ENV}"
    return None


def bootstrap_secret(settings: Settings, environ: Mapping[str, str] | None = None) -> str | None:
    """The bootstrap admin key given to this broker (file or environment), if any: what a
    cluster node presents to fetch another node's checkpoint."""
    given = _given_secret(settings, os.environ if environ is None else environ)
    return None if given is None else given[0]


def _write_secret(path: Path, secret: str) -> None:
    """Owner-only from its creation: never readable by others, not even for an instant."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: set it
        os.write(fd, (secret + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def ensure_bootstrap_key(
    service: BrokerService, settings: Settings, environ: Mapping[str, str] | None = None
) -> None:
    """With auth enabled and no key stored yet, create the admin key named ``bootstrap``."""
    if not settings.auth.enabled or service.machine.api_keys():
        return
    given = _given_secret(settings, os.environ if environ is None else environ)
    spec = KeySpec(name=BOOTSTRAP_NAME, permissions=["admin"])
    if given is not None:
        secret, where = given
        try:
            info, _ = await keyadmin.create(service, spec, secret)
        except TqError as e:
            raise ConfigError(f"bootstrap key from {where}: {e.message}") from e
        log.info("auth.bootstrap_key id=%s source=%s", info.id, where)
        return
    path = settings.persistence.data_dir / BOOTSTRAP_FILE
    secret = new_secret()
    _write_secret(path, secret)
    info, _ = await keyadmin.create(service, spec, secret)
    log.warning(
        "auth.bootstrap_key id=%s written=%s (an admin key: keep the file safe, or revoke it "
        "once you made your own keys)",
        info.id,
        path,
    )
