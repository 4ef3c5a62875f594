"""The broker process: ``service`` (the use-case API every door calls), the TCP door, the
background jobs, and ``server``, the composition root that wires them with the management
doors of ``tq.api``.

This package namespace imports nothing: ``tq.api`` imports ``tq.broker.service`` while
``tq.broker.server`` imports ``tq.api``, so each module is imported by its full name.
"""
