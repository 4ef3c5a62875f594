"""Code generated from proto/tq/v1/tq.proto by scripts/gen-proto: do not edit."""
