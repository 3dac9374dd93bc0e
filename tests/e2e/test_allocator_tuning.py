"""The CLI's glibc settings (bonsai/allocator.py): applied on glibc, and an
operator's MALLOC_*_ environment variables win over them."""
import os
import subprocess
import sys

CLIENT = os.path.join(os.path.dirname(__file__), "..", "..", "client", "python")


def run_tune(extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(extra_env, PYTHONPATH=CLIENT)
    done = subprocess.run([sys.executable, "-c", "import bonsai; print(bonsai.tune_for_streaming())"],
                          env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_applies_on_glibc():
    assert run_tune({}) == "True"


def test_environment_wins():
    assert run_tune({"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}) == "False"

