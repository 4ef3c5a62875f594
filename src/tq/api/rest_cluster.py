"""Cluster routes of the HTTP door: ``GET /v1/cluster/checkpoint`` streams a checkpoint of this
node's store (``tq.cluster.checkpoint``) to a node too far behind the trimmed log. Mounted
only on a cluster node (``create_app(checkpoint=...)``): the callable makes the checkpoint, the
route checks the caller and streams it without holding it in memory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from tq.api.http_auth import Caller
from tq.api.rest import Service, errors
from tq.api.rest_contract import known_query
from tq.broker.access import Permission
from tq.cluster.checkpoint import Snapshot
from tq.cluster.fetch import CHECKPOINT_PATH

#: Makes a checkpoint of the node's store (e.g. ``take_checkpoint_async(service.store, dir)``).
CheckpointSource = Callable[[], Awaitable[Snapshot]]

router = APIRouter(dependencies=[Depends(known_query)])

_TAR: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a tar stream: MANIFEST.json (format, applied index and epoch, every "
        "file with its size and SHA-256), then the store's files",
        "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "X-Tq-Applied-Index": {
                "description": "the log index the checkpoint's store has applied",
                "schema": {"type": "integer", "minimum": 0},
            },
            "X-Tq-Applied-Epoch": {
                "description": "the epoch of the leader that appended that entry",
                "schema": {"type": "integer", "minimum": 0},
            },
        },
    },
}


@router.get(
    CHECKPOINT_PATH,
    operation_id="cluster_checkpoint",
    response_class=StreamingResponse,
    responses={**_TAR, **errors(503)},
)
async def checkpoint(request: Request, service: Service, who: Caller) -> StreamingResponse:
    """A consistent checkpoint of this node's store, streamed (admin of every queue: it holds
    every queue's tasks)."""
    service.allow_every_queue(who, Permission.ADMIN, "a checkpoint (it holds every queue)")
    source: CheckpointSource = request.app.state.checkpoint_source
    snapshot = await source()
    manifest = snapshot.manifest
    return StreamingResponse(
        snapshot.chunks(),  # a plain iterator: Starlette reads it in a thread
        media_type="application/x-tar",
        headers={
            "Content-Length": str(snapshot.stream_bytes),
            "X-Tq-Applied-Index": str(manifest.applied_index),
            "X-Tq-Applied-Epoch": str(manifest.applied_epoch),
        },
        # chunks() removes the directory when it ends; this covers a stream never started.
        background=BackgroundTask(snapshot.remove),
    )
