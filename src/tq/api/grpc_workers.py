"""Worker inspect and control on gRPC: the service's answers as protobuf messages (the
``InspectWorker``, ``ShutdownWorker``, ``ConsumeQueue`` and ``StopConsuming`` rpcs of
``tq.api.grpc_service``)."""

from __future__ import annotations

from tq.api._pb import tq_pb2 as pb
from tq.api.grpc_convert import workers_to_pb
from tq.broker.control import Inspection, Ordered
from tq.core.ids import format_task_id
from tq.protocol.records import WorkerOrderInfo


def order_to_pb(o: WorkerOrderInfo) -> pb.WorkerOrder:
    return pb.WorkerOrder(seq=o.seq, action=o.action, queue=o.queue, at=o.at)


def detail_to_pb(found: Inspection) -> pb.WorkerDetail:
    (worker,) = workers_to_pb([found.worker])
    return pb.WorkerDetail(
        worker=worker,
        running=[format_task_id(i) for i in found.running],
        reserved=[format_task_id(i) for i in found.reserved],
        orders=[order_to_pb(o) for o in found.orders],
    )


def ordered_to_pb(done: Ordered) -> pb.WorkerOrdered:
    return pb.WorkerOrdered(
        order=None if done.order is None else order_to_pb(done.order),
        pending=[order_to_pb(o) for o in done.pending],
    )
