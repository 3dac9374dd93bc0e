"""tqdm bars on stderr for one Compress call: upload, compression, download."""
from __future__ import annotations

import sys
import threading
from typing import Optional

from tqdm import tqdm

from bonsai.v1 import compressor_pb2 as pb


def _stage_name(stage: int) -> str:
    return pb.Stage.Name(stage).replace("STAGE_", "").lower()


class CompressBars:
    def __init__(self, enabled: bool = True, stream=sys.stderr):
        self._enabled = enabled
        self._stream = stream
        self._lock = threading.Lock()  # upload arrives on gRPC's sending thread
        self._upload: Optional[tqdm] = None
        self._stage: Optional[tqdm] = None
        self._stage_value = None
        self._download: Optional[tqdm] = None
        self._shards: Optional[tqdm] = None

    def _bar(self, **kwargs) -> tqdm:
        return tqdm(file=self._stream, disable=not self._enabled, leave=True, dynamic_ncols=True, **kwargs)

    def upload(self, sent: int, total: Optional[int]) -> None:
        with self._lock:
            if self._upload is None:
                self._upload = self._bar(desc="upload".ljust(12), total=total, unit="B", unit_scale=True, unit_divisor=1024)
            self._upload.update(sent - self._upload.n)
            if total is not None and sent >= total:
                self._upload.close()

    def progress(self, event: pb.Progress) -> None:
        with self._lock:
            if event.stage in (pb.STAGE_QUEUED, pb.STAGE_RECEIVING):
                return  # the byte bars show receiving and sending more precisely
            if event.stage != self._stage_value or self._stage is None:
                self._finish_stage()
                self._stage_value = event.stage
                self._stage = self._bar(total=100, bar_format="{desc}{percentage:3.0f}%|{bar}|")
            self._stage.set_description_str(f"{_stage_name(event.stage):<12} {event.detail[-32:]:<32} ",
                                            refresh=False)
            self._stage.n = round(min(max(event.fraction, 0.0), 1.0) * 100)
            self._stage.refresh()

    def _finish_stage(self) -> None:
        # Progress is coalesced, so a stage's last event may never arrive: a
        # stage that was followed by another is complete.
        if self._stage is not None:
            self._stage.set_description_str(f"{_stage_name(self._stage_value):<12} {'':<32} ", refresh=False)
            self._stage.n = 100
            self._stage.close()
            self._stage = None

    def download(self, received: int, total: int) -> None:
        # The output streams while the server still works: this bar runs
        # beside the stage bar, whose last stage ends with the job.
        with self._lock:
            if self._download is None:
                self._download = self._bar(desc="download".ljust(12), total=total or None, unit="B",
                                           unit_scale=True, unit_divisor=1024)
            self._download.update(received - self._download.n)

    def shards(self, done: int, total: int) -> None:
        """A parallel job's one bar: shard jobs done of all."""
        with self._lock:
            if self._shards is None:
                self._shards = self._bar(desc="shard jobs".ljust(12), total=total, unit="job")
            self._shards.update(done - self._shards.n)

    def close(self) -> None:
        with self._lock:
            for bar in (self._upload, self._stage, self._download, self._shards):
                if bar is not None:
                    bar.close()
