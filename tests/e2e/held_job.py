"""A Compress call that is admitted (spec sent) but holds its upload back
until released: it occupies a job slot for as long as a test needs."""
from __future__ import annotations

import threading

import grpc

import bonsai
from bonsai.v1 import compressor_pb2 as pb

HOLD_TIMEOUT = 60


class HeldJob:
    """A Compress call that is admitted (spec sent) but holds its upload back."""

    def __init__(self, client: bonsai.Client, model: bytes):
        self.model = model
        self.admitted = threading.Event()
        self.release = threading.Event()
        self.responses = []
        self.error = None

        def requests():
            files = [pb.FileDeclaration(name="model.safetensors", size_bytes=len(model))]
            yield pb.CompressRequest(spec=pb.CompressionSpec(method="magnitude", sparsity=0.5, files=files))
            self.release.wait(HOLD_TIMEOUT)
            for start in range(0, len(model), 1 << 20):
                yield pb.CompressRequest(file_chunk=pb.FileChunk(file=0, data=model[start:start + (1 << 20)]))

        self.call = client.stub.Compress(requests(), timeout=120)
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self):
        try:
            for response in self.call:
                self.responses.append(response)
                self.admitted.set()
        except grpc.RpcError as err:
            self.error = err
        finally:
            self.admitted.set()

    def finish(self) -> bytes:
        self.release.set()
        self.thread.join(HOLD_TIMEOUT)
        assert not self.thread.is_alive(), "held job never finished"
        assert self.error is None, f"held job failed: {self.error}"
        kinds = [r.WhichOneof("payload") for r in self.responses]
        assert kinds and kinds[-1] == "report", f"the report is not the last message: {kinds[-3:]}"
        return b"".join(r.file_chunk.data for r in self.responses if r.WhichOneof("payload") == "file_chunk")
