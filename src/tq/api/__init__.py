"""Management front doors over ``tq.broker.service``: REST + WebSocket, gRPC, metrics."""
