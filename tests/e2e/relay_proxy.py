"""A gRPC relay between the real client and the real server that tampers
with what the server sends, as a broken network or middlebox would.

Compress responses are relayed one by one; `tamper(index, response)` sees
each (a CompressResponse, index counting from 0) and returns the message to
forward, or None to drop it. Requests, other methods and statuses pass
through unchanged.
"""
from __future__ import annotations

from concurrent import futures
from typing import Callable, Optional

import grpc

from bonsai.v1 import compressor_pb2 as pb
from server_process import free_port

_MAX = 128 << 20
_OPTIONS = [("grpc.max_receive_message_length", _MAX), ("grpc.max_send_message_length", _MAX)]


def _identity(data):
    return data


class RelayProxy:
    def __init__(self, upstream: str, tamper: Callable[[int, pb.CompressResponse], Optional[pb.CompressResponse]]):
        self.tamper = tamper
        self.tampered = 0  # responses changed or dropped
        self._channel = grpc.insecure_channel(upstream, options=_OPTIONS)
        self._compress = self._channel.stream_stream(
            "/bonsai.v1.Compressor/Compress", request_serializer=_identity,
            response_deserializer=pb.CompressResponse.FromString)
        self._unary = {}
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=_OPTIONS)
        self._server.add_generic_rpc_handlers([_Handler(self)])
        self._server.add_insecure_port(self.target)

    def start(self) -> "RelayProxy":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)
        self._channel.close()

    def __enter__(self) -> "RelayProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ relaying

    def relay_compress(self, request_iterator, context):
        call = self._compress(request_iterator, metadata=context.invocation_metadata(),
                              timeout=context.time_remaining())
        context.add_callback(call.cancel)
        try:
            for index, response in enumerate(call):
                forwarded = self.tamper(index, response)
                if forwarded is None or forwarded.SerializeToString() != response.SerializeToString():
                    self.tampered += 1
                if forwarded is not None:
                    yield forwarded.SerializeToString()
        except grpc.RpcError as err:
            context.abort(err.code(), err.details() or "")

    def relay_unary(self, method: str, request_iterator_or_request, context, streaming: bool):
        if streaming:
            call = self._channel.stream_unary(method, request_serializer=_identity,
                                              response_deserializer=_identity)
        else:
            call = self._channel.unary_unary(method, request_serializer=_identity,
                                             response_deserializer=_identity)
        try:
            return call(request_iterator_or_request, timeout=context.time_remaining())
        except grpc.RpcError as err:
            context.abort(err.code(), err.details() or "")


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, proxy: RelayProxy):
        self._proxy = proxy

    def service(self, details):
        method = details.method
        proxy = self._proxy
        if method == "/bonsai.v1.Compressor/Compress":
            return grpc.stream_stream_rpc_method_handler(proxy.relay_compress)
        if method == "/bonsai.v1.Compressor/Inspect":
            return grpc.stream_unary_rpc_method_handler(
                lambda it, ctx: proxy.relay_unary(method, it, ctx, streaming=True))
        if method.startswith("/bonsai.v1.Compressor/"):
            return grpc.unary_unary_rpc_method_handler(
                lambda req, ctx: proxy.relay_unary(method, req, ctx, streaming=False))
        return None


# ---------------------------------------------------------------- tamperings

def flip_one_byte(file_index: int, chunk_number: int = 0, offset: int = 0):
    """Flips the bits of one byte of the `chunk_number`-th file_chunk of `file_index`."""
    seen = {"chunks": 0}

    def tamper(index, response):
        if response.WhichOneof("payload") != "file_chunk" or response.file_chunk.file != file_index:
            return response
        number = seen["chunks"]
        seen["chunks"] += 1
        if number != chunk_number:
            return response
        changed = pb.CompressResponse()
        changed.CopyFrom(response)
        data = bytearray(changed.file_chunk.data)
        data[min(offset, len(data) - 1)] ^= 0xFF
        changed.file_chunk.data = bytes(data)
        return changed
    return tamper


def drop_report(index, response):
    return None if response.WhichOneof("payload") == "report" else response


def drop_last_chunk_of(file_index: int):
    """Holds back each file_chunk of `file_index` until the next one comes,
    so every chunk of that file but its last is forwarded."""
    held = {}

    def tamper(index, response):
        if response.WhichOneof("payload") == "file_chunk" and response.file_chunk.file == file_index:
            previous = held.get("chunk")
            held["chunk"] = response
            return previous
        return response
    return tamper
