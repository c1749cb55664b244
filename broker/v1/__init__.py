"""Generated from proto/broker/v1/broker.proto by `make proto`; do not edit."""
