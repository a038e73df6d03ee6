"""``google.rpc.Status`` with ``gateway.ErrorDetail`` entries, as Fabric sends them.

Fabric's gateway reports which endorser failed, and why, in the
``grpc-status-details-bin`` trailer: a ``google.rpc.Status`` whose details
are ``gateway.ErrorDetail`` messages. The google.rpc protos are not
installed here, so the three-field Status message is declared at runtime
in a private descriptor pool.
"""

from __future__ import annotations

from typing import Any

import grpc
from fabric_protos.gateway import gateway_pb2
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

DETAILS_KEY = "grpc-status-details-bin"


def _status_class() -> Any:
    pool = descriptor_pool.DescriptorPool()
    any_file = descriptor_pb2.FileDescriptorProto()
    any_pb2.DESCRIPTOR.CopyToProto(any_file)
    pool.Add(any_file)
    field = descriptor_pb2.FieldDescriptorProto
    status_file = descriptor_pb2.FileDescriptorProto(
        name="tcbridge_devpeer/google_rpc_status.proto",
        package="google.rpc",
        dependency=["google/protobuf/any.proto"],
        syntax="proto3",
    )
    message = status_file.message_type.add(name="Status")
    message.field.add(
        name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL
    )
    message.field.add(
        name="message", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL
    )
    message.field.add(
        name="details",
        number=3,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_REPEATED,
        type_name=".google.protobuf.Any",
    )
    pool.Add(status_file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("google.rpc.Status")
    )


Status = _status_class()


def encode_status(
    code: grpc.StatusCode, message: str, details: list[gateway_pb2.ErrorDetail]
) -> bytes:
    status = Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return bytes(status.SerializeToString())


def error_details(error: grpc.aio.AioRpcError) -> list[gateway_pb2.ErrorDetail]:
    """The ``gateway.ErrorDetail`` entries of a failed Gateway call."""
    for key, value in error.trailing_metadata() or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            status = Status.FromString(value)
            found = []
            for packed in status.details:
                detail = gateway_pb2.ErrorDetail()
                if packed.Unpack(detail):
                    found.append(detail)
            return found
    return []
