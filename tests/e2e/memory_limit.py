"""Runs processes (a bonsai-server above all) under a memory limit: a cgroup
made for them, with the limit, removed afterwards.

    with limited_server(768 << 20, ["--max_model_bytes=..."]) as server:
        ...drive it...
        peak = server.vm_hwm_bytes()        # /proc/PID/status VmHWM
        server.memory_group.oom_kills()     # did the kernel kill in the group?

    with MemoryGroup(64 << 20) as group:
        done = subprocess.run(group.command([sys.executable, "-c", ...]))

cgroup v1 (a hierarchy with the memory controller, memory.limit_in_bytes and,
with swap accounting, memory.memsw.limit_in_bytes) is preferred; cgroup v2
(memory.max, memory.swap.max = 0) when only it has the memory controller. The
group is made inside the cgroup this process already runs in (v1), or beside
it (v2, whose "no processes in inner groups" rule forbids a child of a group
with members), so whatever limits enclose the tests still enclose it.

A process joins the group before its program starts: it is started through
`sh -c 'echo $$ > cgroup.procs && exec "$@"'`, which keeps its pid and
needs no preexec_fn (unsafe in a process that has gRPC threads). Exceeding
the limit gets the process OOM-killed (SIGKILL): without swap the kernel
cannot do anything else once the page cache it also charges is reclaimed.
Needs root (or a delegated hierarchy): `unavailable_reason()` says why not.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

from server_process import BonsaiServer, proc_status_bytes

_names = itertools.count()
REMOVE_TIMEOUT = 10.0  # seconds for a killed member to leave the group


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 1 or 2
    base: str     # the directory new groups are made in


def _own_cgroups() -> List[tuple]:
    """(controllers, path) of each line of /proc/self/cgroup."""
    with open("/proc/self/cgroup") as f:
        return [(controllers.split(","), path)
                for _, controllers, path in (line.rstrip("\n").split(":", 2) for line in f)]


def _mounts(fs_type: str) -> List[tuple]:
    """(mount point, options) of each mount of that file system type."""
    with open("/proc/mounts") as f:
        return [(fields[1], fields[3].split(",")) for fields in (line.split() for line in f)
                if fields[2] == fs_type]


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def find_hierarchy() -> Optional[Hierarchy]:
    """Where a memory-limited group can be made, or None."""
    own = _own_cgroups()
    v1_path = next((path for controllers, path in own if "memory" in controllers), None)
    for mount, options in _mounts("cgroup"):
        if "memory" in options and v1_path is not None:
            return Hierarchy(1, os.path.join(mount, v1_path.lstrip("/")))
    v2_path = next((path for controllers, path in own if controllers == [""]), None)
    for mount, _ in _mounts("cgroup2"):
        if v2_path is None:
            break
        group = os.path.join(mount, v2_path.lstrip("/"))
        # A child of the root (where a container's namespace puts us) if the
        # root already hands memory down; else a sibling of our group. The
        # controllers are never switched on here: that is the host's setup.
        if v2_path == "/":
            if "memory" in _read(os.path.join(mount, "cgroup.subtree_control")).split():
                return Hierarchy(2, mount)
        elif "memory" in _read(os.path.join(group, "cgroup.controllers")).split():
            return Hierarchy(2, os.path.dirname(group))
    return None


def unavailable_reason() -> Optional[str]:
    """Why no memory-limited group can be made here, or None when one can."""
    if os.geteuid() != 0:
        return f"memory cgroups need root (running as uid {os.geteuid()})"
    try:
        hierarchy = find_hierarchy()
    except OSError as e:
        return f"cannot read the cgroup hierarchy: {e}"
    if hierarchy is None:
        return "no memory cgroup: no cgroup v1 memory hierarchy, no cgroup v2 with the memory controller"
    try:
        MemoryGroup(64 << 20, hierarchy).remove()
    except OSError as e:
        return f"cannot make a memory cgroup under {hierarchy.base}: {e}"
    return None


class MemoryGroup:
    """A cgroup limiting its members' memory (RAM + swap) to `limit_bytes`."""

    def __init__(self, limit_bytes: int, hierarchy: Optional[Hierarchy] = None):
        self.hierarchy = hierarchy or find_hierarchy()
        if self.hierarchy is None:
            raise RuntimeError(unavailable_reason() or "no memory cgroup")
        self.limit_bytes = limit_bytes
        self.path = os.path.join(self.hierarchy.base, f"bonsai-test-{os.getpid()}-{next(_names)}")
        os.mkdir(self.path)
        try:
            self._set_limit()
        except BaseException:
            os.rmdir(self.path)
            raise

    @property
    def version(self) -> int:
        return self.hierarchy.version

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _set_limit(self) -> None:
        if self.version == 1:
            _write(self._file("memory.limit_in_bytes"), str(self.limit_bytes))
            # With swap accounting, RAM + swap: the limit cannot be dodged by
            # swapping. Written second, as it may never be below the first.
            if os.path.exists(self._file("memory.memsw.limit_in_bytes")):
                _write(self._file("memory.memsw.limit_in_bytes"), str(self.limit_bytes))
        else:
            _write(self._file("memory.max"), str(self.limit_bytes))
            if os.path.exists(self._file("memory.swap.max")):
                _write(self._file("memory.swap.max"), "0")

    @property
    def exec_prefix(self) -> List[str]:
        """An argv prefix that moves the process into the group, then execs the rest."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', self._file("cgroup.procs")]

    def command(self, argv: Sequence[str]) -> List[str]:
        return self.exec_prefix + list(argv)

    def pids(self) -> List[int]:
        return [int(pid) for pid in _read(self._file("cgroup.procs")).split()]

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer ended in this group so far."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in _read(self._file(name)).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        raise RuntimeError(f"{self._file(name)} has no oom_kill count (kernel older than 4.13?)")

    def peak_bytes(self) -> Optional[int]:
        """The group's peak charge (RSS and page cache), if the kernel keeps one."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        return int(_read(self._file(name))) if os.path.exists(self._file(name)) else None

    def remove(self) -> None:
        """Removes the group. Members still in it were started through it (by
        us): they are killed first, by pid."""
        if not os.path.isdir(self.path):
            return
        deadline = time.monotonic() + REMOVE_TIMEOUT
        while self.pids():
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {self.pids()} stay in {self.path}")
            time.sleep(0.05)
        # A group whose last member just left can be briefly busy.
        while True:
            try:
                os.rmdir(self.path)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __enter__(self) -> "MemoryGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def vm_hwm_bytes(pid: int) -> int:
    """Peak resident memory of a running process."""
    return proc_status_bytes(pid, "VmHWM")


@contextlib.contextmanager
def limited_server(limit_bytes: int, extra_args: Sequence[str] = (), workers: int = 2,
                   binary: Optional[str] = None) -> Iterator[BonsaiServer]:
    """A started BonsaiServer inside a fresh MemoryGroup (`server.memory_group`);
    the server is stopped and the group removed on exit."""
    with MemoryGroup(limit_bytes) as group:
        server = BonsaiServer(extra_args, workers=workers, binary=binary, wrapper=group.exec_prefix)
        server.memory_group = group
        try:
            yield server.start()
        finally:
            server.close()
