"""What runs beside ToolBroker on the same server: health, reflection, and the wire contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from broker.testing import RunningBroker

ROOT = Path(__file__).resolve().parent.parent


def test_health_reports_serving(broker: RunningBroker) -> None:
    with grpc.insecure_channel(broker.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "broker.v1.ToolBroker"):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(broker: RunningBroker) -> None:
    with grpc.insecure_channel(broker.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    names = {service.name for service in answer.list_services_response.service}
    assert {"broker.v1.ToolBroker", "grpc.health.v1.Health"} <= names


def test_the_generated_code_matches_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(ROOT / "proto/broker/v1/broker.proto"),
        ],
        check=True,
    )
    for name in ("broker_pb2.py", "broker_pb2.pyi"):
        fresh = (tmp_path / "broker/v1" / name).read_text()
        committed = (ROOT / "broker/v1" / name).read_text()
        assert fresh == committed, f"broker/v1/{name} is stale: run `make proto`"
