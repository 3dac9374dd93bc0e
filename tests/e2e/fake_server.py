"""An in-process stand-in for bonsai-server that misbehaves on request.

Only for faults the real server cannot be made to show: a corrupted model
after a correct report, refusals right after the spec. It echoes the model
reversed, so a test can tell the output from the input.
"""
from __future__ import annotations

import hashlib
import threading
from concurrent import futures

import grpc

from bonsai.v1 import compressor_pb2 as pb
from bonsai.v1 import compressor_pb2_grpc as pb_grpc


class FakeCompressor(pb_grpc.CompressorServicer):
    def __init__(self):
        self.lock = threading.Lock()
        self.refusals_left = 0        # RESOURCE_EXHAUSTED right after the spec
        self.refuse_code = grpc.StatusCode.RESOURCE_EXHAUSTED
        self.fail_after_upload = None  # a code to end with once the upload is in
        self.corrupt_output = False
        self.calls = 0
        self.model_bytes_seen = []     # per call, bytes of model that arrived
        self.max_model_bytes = 1 << 30

    def Compress(self, request_iterator, context):
        with self.lock:
            self.calls += 1
            refuse = self.refusals_left > 0
            self.refusals_left -= refuse
        spec = next(request_iterator).spec
        if refuse:
            self.model_bytes_seen.append(0)
            context.abort(self.refuse_code, "all workers are busy and the queue is full; retry later")
        yield pb.CompressResponse(progress=pb.Progress(stage=pb.STAGE_RECEIVING))
        data = bytearray()
        for request in request_iterator:
            data += request.model_chunk
        self.model_bytes_seen.append(len(data))
        if self.fail_after_upload is not None:
            context.abort(self.fail_after_upload, "failed after the upload")
        output = bytes(data[::-1])
        report = pb.CompressionReport(format="fake", method=spec.method,
                                      output_sha256=hashlib.sha256(output).hexdigest())
        report.totals.model_bytes_in = len(data)
        report.totals.model_bytes_out = len(output)
        yield pb.CompressResponse(progress=pb.Progress(stage=pb.STAGE_COMPRESSING, fraction=1.0))
        yield pb.CompressResponse(report=report)
        if self.corrupt_output and output:
            output = bytes([output[0] ^ 1]) + output[1:]
        for start in range(0, len(output), 1 << 20):
            yield pb.CompressResponse(model_chunk=output[start:start + (1 << 20)])

    def Inspect(self, request_iterator, context):
        total = sum(len(r.model_chunk) for r in request_iterator)
        return pb.InspectResponse(format="fake", total_bytes=total)

    def GetCapabilities(self, request, context):
        return pb.Capabilities(formats=["fake"], version="fake",
                               limits=pb.Limits(max_model_bytes=self.max_model_bytes))


def start_fake():
    servicer = FakeCompressor()
    server = grpc.server(futures.ThreadPoolExecutor(8), options=[("grpc.max_receive_message_length", 16 << 20)])
    pb_grpc.add_CompressorServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, servicer, f"127.0.0.1:{port}"
