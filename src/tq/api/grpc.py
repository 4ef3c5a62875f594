"""The gRPC front door (``grpc.aio``): ``tq.v1.TaskQueue`` (``grpc_service``), the standard
health service and server reflection, served in the broker's own event loop.

Started by ``tq.broker.server`` when ``api.grpc_enabled``; binds ``api.grpc_host:grpc_port``
(port 0: any free port), over TLS when the broker has a certificate. The schema is
``proto/tq/v1/tq.proto``, compiled into ``_pb``.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tq.api._pb import tq_pb2_grpc
from tq.api.grpc_service import ERROR_CODE_KEY, SERVICE_NAME, TaskQueueService
from tq.broker.service import BrokerService
from tq.broker.tls import ServerTls
from tq.config import Settings
from tq.errors import ConfigError

#: Seconds in-flight unary calls get to finish at shutdown; streams are ended at once.
STOP_GRACE_S: Final = 2.0
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

__all__ = ["ERROR_CODE_KEY", "SERVICE_NAME", "GrpcServer"]
log = logging.getLogger(__name__)


def _certificates(tls: ServerTls) -> grpc.ServerCertificateConfiguration:
    pem = tls.pem()
    return grpc.ssl_server_certificate_configuration(
        [(pem.private_key, pem.cert_chain)], root_certificates=pem.client_ca
    )


class _Health(health.aio.HealthServicer):
    """The standard health service; SERVING while ``service.ready()``, read at each Check."""

    def __init__(self, service: BrokerService) -> None:
        super().__init__()
        self.service = service
        self.stopping = False

    async def refresh(self) -> None:
        ok = self.service.ready() and not self.stopping
        for name in ("", SERVICE_NAME):
            await self.set(name, _SERVING if ok else _NOT_SERVING)

    async def Check(  # noqa: N802 (the name is the health service's)
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        return await super().Check(request, context)


class GrpcServer:
    """Built and started by ``tq.broker.server``; listens on api.grpc_host:grpc_port."""

    name = "grpc"

    def __init__(
        self, service: BrokerService, settings: Settings, *, tls: ServerTls | None = None
    ) -> None:
        self.service = service
        self.settings = settings
        self.tls = tls
        self._tls_generation = 0
        self.port = settings.api.grpc_port
        self.servicer = TaskQueueService(service)
        self.health = _Health(service)
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        api = self.settings.api
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", api.max_request_body_bytes),
                # gRPC sets SO_REUSEPORT by default: a second broker would then share the port
                # silently instead of failing to bind.
                ("grpc.so_reuseport", 0),
            ]
        )
        tq_pb2_grpc.add_TaskQueueServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        host = f"[{api.grpc_host}]" if ":" in api.grpc_host else api.grpc_host
        try:
            address = f"{host}:{api.grpc_port}"
            if self.tls is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self._credentials(self.tls))
        except RuntimeError as e:
            raise ConfigError(
                f"api.grpc_port: cannot listen on {host}:{api.grpc_port} ({e})"
            ) from e
        await self.health.refresh()
        await server.start()
        self._server, self.port = server, port
        return port

    def _credentials(self, tls: ServerTls) -> grpc.ServerCredentials:
        """TLS from the broker's files; gRPC asks ``fetch`` before each handshake, so a SIGHUP
        reload (a new ``tls.generation``) reaches this door too. A client certificate is asked
        for only when required (gRPC has no optional mode)."""
        self._tls_generation = tls.generation

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            if tls.generation == self._tls_generation:
                return None
            self._tls_generation = tls.generation
            try:
                return _certificates(tls)
            except ConfigError as e:  # the files changed again since the reload checked them
                log.error("grpc.tls_reload_failed error=%s", e.message)
                return None

        return grpc.dynamic_ssl_server_credentials(
            _certificates(tls),
            fetch,  # type: ignore[arg-type]  # None means "no change" (grpc's docstring)
            require_client_authentication=tls.require_client_cert,
        )

    async def stop(self) -> None:
        """End the streams, refuse new calls, give unary calls ``STOP_GRACE_S`` to finish."""
        if self._server is None:
            return
        self.health.stopping = True
        await self.health.enter_graceful_shutdown()
        self.servicer.watches.close_all()
        await self._server.stop(STOP_GRACE_S)
        self._server = None
