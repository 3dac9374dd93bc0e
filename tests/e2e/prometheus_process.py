"""Debian's Prometheus server on a free loopback port, with its own config and
a temporary storage directory, for the metrics proofs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Optional

import yaml

from server_process import free_port

START_TIMEOUT = 60.0


def prometheus_binary() -> Optional[str]:
    return shutil.which("prometheus")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


class Prometheus:
    """`scrape_configs` and `rule_files` go into the config as given."""

    def __init__(self, scrape_configs: list, rule_files: list = ()):
        self.dir = tempfile.mkdtemp(prefix="bonsai-prometheus-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = os.path.join(self.dir, "prometheus.yml")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": list(rule_files),
            "scrape_configs": scrape_configs,
        }
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f)
        self._log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Prometheus":
        self.proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={self.config_path}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready within {START_TIMEOUT}s:\n{self.log()}")

    def api(self, path: str, **params) -> dict:
        """GET /api/v1/<path>; returns the whole answer, errors included."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as err:  # 400/422 carry the error in JSON
            return json.load(err)

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)

    def scalar(self, expr: str) -> Optional[float]:
        """The value of a one-series query, or None when it has no series."""
        answer = self.query(expr)
        result = answer.get("data", {}).get("result", [])
        return float(result[0]["value"][1]) if result else None

    def wait_until(self, expr: str, predicate, timeout: float = 60.0, what: str = "") -> float:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.scalar(expr)
            if value is not None and predicate(value):
                return value
            time.sleep(0.5)
        raise TimeoutError(f"waited {timeout}s for {what or expr}; last value {value}")

    def log(self) -> str:
        self._log.flush()
        with open(self._log.name, "rb") as f:
            return f.read()[-6000:].decode(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
