"""The standard gRPC health (grpc.health.v1) and reflection services on the real daemons.

Expected of the daemon (tonic-health, tonic-reflection):
- Health.Check("") and Health.Check("cutter.backup.v1.BackupService") answer
  SERVING when the selftest passes and NOT_SERVING when it fails;
- server reflection (v1, or v1alpha) lists cutter.backup.v1.BackupService
  and grpc.health.v1.Health, and file_containing_symbol returns
  cutter/backup/v1/backup.proto with the same services and messages as the
  proto these stubs were generated from.
The daemon runs its first selftest in the background after start, so the
health tests poll for a bounded time before judging.
"""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from cutter_backup import make_channel
from cutter_backup._gen import backup_pb2

SERVICE = "cutter.backup.v1.BackupService"
PROTO_FILE = "cutter/backup/v1/backup.proto"
SETTLE_SECONDS = 30.0

Serving = health_pb2.HealthCheckResponse.ServingStatus


def wait_for_health(socket: str, service: str, want: int) -> None:
    last: str | None = None
    deadline = time.monotonic() + SETTLE_SECONDS
    with make_channel(socket) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                got = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
                last = Serving.Name(got)
                if got == want:
                    return
            except grpc.RpcError as e:
                last = f"{e.code().name}: {e.details()}"
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    last += " (the daemon serves no grpc.health.v1.Health: tonic-health)"
                    break  # no point in waiting
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    pytest.fail(f"Health.Check({service!r}) on {socket}: want {Serving.Name(want)}, got {last}")


@pytest.mark.parametrize("service", ["", SERVICE])
def test_health_serving_on_ready(ready_socket, service):
    wait_for_health(ready_socket, service, Serving.SERVING)


@pytest.mark.parametrize("service", ["", SERVICE])
def test_health_not_serving_on_failing(failing_socket, service):
    wait_for_health(failing_socket, service, Serving.NOT_SERVING)


# -- reflection ------------------------------------------------------------------------

# grpcio-reflection ships only v1alpha stubs; v1 has the same messages and
# field numbers under another package, so the v1alpha classes serve for both.
REFLECTION_METHODS = (
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
)


def reflect(socket: str, request: reflection_pb2.ServerReflectionRequest):
    errors: list[str] = []
    with make_channel(socket) as channel:
        for method in REFLECTION_METHODS:
            call = channel.stream_stream(
                method,
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            try:
                responses = list(call(iter([request]), timeout=30))
            except grpc.RpcError as e:
                errors.append(f"{method}: {e.code().name}: {e.details()}")
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    continue
                break
            assert len(responses) == 1, responses
            response = responses[0]
            if response.HasField("error_response"):
                pytest.fail(f"{method}: error_response {response.error_response}")
            return response
    pytest.fail(
        "server reflection (v1 or v1alpha) is not served (tonic-reflection): " + "; ".join(errors)
    )


def test_reflection_lists_services(ready_socket):
    r = reflect(ready_socket, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in r.list_services_response.service}
    assert SERVICE in names, names
    assert "grpc.health.v1.Health" in names, names


@pytest.mark.parametrize("symbol", [SERVICE, "cutter.backup.v1.BackupEnvelope"])
def test_reflection_file_containing_symbol(ready_socket, symbol):
    r = reflect(ready_socket, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in r.file_descriptor_response.file_descriptor_proto
    ]
    by_name = {f.name: f for f in files}
    assert PROTO_FILE in by_name, sorted(by_name)
    served = by_name[PROTO_FILE]
    assert served.package == "cutter.backup.v1"
    # The daemon serves the contract these stubs were generated from (at least).
    ours = descriptor_pb2.FileDescriptorProto.FromString(backup_pb2.DESCRIPTOR.serialized_pb)
    served_methods = {(s.name, m.name) for s in served.service for m in s.method}
    our_methods = {(s.name, m.name) for s in ours.service for m in s.method}
    assert our_methods <= served_methods, our_methods - served_methods
    assert {m.name for m in ours.message_type} <= {m.name for m in served.message_type}
