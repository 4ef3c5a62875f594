"""Fetching a checkpoint from the leader's HTTP door (``GET /v1/cluster/checkpoint``) into a
verified, ready-to-swap copy beside a node's store (``tq.cluster.install``): what a node does
when the log says ``LogTrimmedError``. Plain urllib in a thread: the stream is read and
written to disk as it arrives, never held in memory."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from tq.cluster.checkpoint import Manifest
from tq.cluster.entry import CorruptEntryError, decode_entry
from tq.cluster.install import CheckpointError, discard_ready, receive_checkpoint
from tq.cluster.log import ReplicatedLog
from tq.core.layout import AppliedMark
from tq.errors import (
    LogTrimmedError,
    TqError,
    UnavailableError,
    ValidationError,
    error_for_code,
)

#: Path of the endpoint on a node's HTTP door.
CHECKPOINT_PATH = "/v1/cluster/checkpoint"
#: Most bytes of an error answer read (its JSON names the error).
_ERROR_BODY = 64 << 10


def checkpoint_url(http_address: str, *, tls: bool = False) -> str:
    """The endpoint's URL on a node whose HTTP door is at ``http_address`` (host:port)."""
    return f"{'https' if tls else 'http'}://{http_address}{CHECKPOINT_PATH}"


async def fetch_checkpoint(
    url: str,
    store_dir: Path,
    *,
    have: AppliedMark | None = None,
    api_key: str | None = None,
    tls: ssl.SSLContext | None = None,
    timeout_s: float = 30.0,
) -> Manifest:
    """Download the checkpoint at ``url`` and leave it verified beside ``store_dir`` (then
    close the store, ``swap_in(store_dir)``, reopen it, follow the log after the manifest's
    applied index). ``timeout_s`` bounds each network wait (connect, each read), not the whole
    download. The server's refusal is raised as its tq error (PermissionDeniedError...);
    UnavailableError when it cannot be reached; CheckpointError for a bad stream."""
    if not url.startswith(("http://", "https://")):
        raise ValidationError(f"checkpoint URL {url!r}: must be http:// or https://")
    if url.startswith("https://") and tls is None:
        tls = ssl.create_default_context()
    return await asyncio.to_thread(_fetch, url, Path(store_dir), have, api_key, tls, timeout_s)


def _fetch(
    url: str,
    store_dir: Path,
    have: AppliedMark | None,
    api_key: str | None,
    tls: ssl.SSLContext | None,
    timeout_s: float,
) -> Manifest:
    headers = {"Accept": "application/x-tar"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (scheme checked)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=tls) as reply:  # noqa: S310
            return receive_checkpoint(reply, store_dir, have=have)
    except urllib.error.HTTPError as exc:
        raise _refusal(url, exc) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UnavailableError(f"checkpoint from {url}: {reason}") from exc


def _refusal(url: str, exc: urllib.error.HTTPError) -> TqError:
    """The tq error the server answered with (its JSON ``error``), else one naming the
    status."""
    try:
        body = json.loads(exc.read(_ERROR_BODY))
        error = body["error"]
        return error_for_code(int(error["code"]), f"checkpoint from {url}: {error['message']}")
    except (ValueError, KeyError, TypeError, OSError):
        return UnavailableError(f"checkpoint from {url}: HTTP {exc.code} {exc.reason}")


async def check_committed(log: ReplicatedLog, mark: AppliedMark) -> None:
    """CheckpointError unless the checkpoint's last entry is the one the log holds at its
    index. A leader writes a batch to its store before etcd commits it, so a checkpoint of a
    leader deposed mid-append can hold an entry the log never took (its index absent, or
    taken by the next leader's entry of another epoch): install none such. An index already
    trimmed passes (only entries every holding node applied are trimmed: it was committed)."""
    if mark.index == 0:
        return
    try:
        held = await log.read(mark.index, limit=1)
    except LogTrimmedError:
        return
    if not held:
        raise CheckpointError(
            f"checkpoint holds entry {mark.index}, which the log does not: never committed"
        )
    try:
        epoch = decode_entry(mark.index, held[0][1]).epoch
    except CorruptEntryError as exc:
        raise CheckpointError(f"checkpoint's entry {mark.index}: {exc.message}") from exc
    if epoch != mark.epoch:
        raise CheckpointError(
            f"checkpoint holds entry {mark.index} of epoch {mark.epoch}, the log holds it of "
            f"epoch {epoch}: a deposed leader's uncommitted batch"
        )


async def fetch_committed(
    log: ReplicatedLog,
    url: str,
    store_dir: Path,
    *,
    have: AppliedMark | None = None,
    api_key: str | None = None,
    tls: ssl.SSLContext | None = None,
    timeout_s: float = 30.0,
) -> Manifest:
    """``fetch_checkpoint`` then ``check_committed``: what a node told ``LogTrimmedError``
    calls. On any refusal nothing is left beside the store; on success ``swap_in`` is next."""
    manifest = await fetch_checkpoint(
        url, store_dir, have=have, api_key=api_key, tls=tls, timeout_s=timeout_s
    )
    try:
        await check_committed(log, manifest.mark)
    except BaseException:
        discard_ready(Path(store_dir))
        raise
    return manifest
