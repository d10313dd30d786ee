"""What a result was measured on: CPU, cores, load, versions, the source revision."""

import datetime
import os
import platform
import re
import subprocess


def _run(cmd, cwd=None):
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return None


def cpu_model():
    text = _run(["lscpu"])
    m = re.search(r"^Model name:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else platform.processor() or "unknown"


def memory_gib():
    try:
        with open("/proc/meminfo") as f:
            kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        return round(kib / 2**20, 1)
    except (OSError, AttributeError):
        return None


def gpu_name():
    name = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    return name.splitlines()[0] if name else None


def describe(repo_root, peftrun_binary):
    commit = _run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo_root)
    dirty = bool(_run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root))
    version = _run([peftrun_binary, "--version"]) if os.path.exists(peftrun_binary) else ""
    version = version.removeprefix("peftrun ").strip()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "gpu": gpu_name(),
        "kernel": platform.release(),
        "load_average_start": load_average(),
        "peftrun_version": version,
        "peftrun_commit": commit + ("-dirty" if dirty else "") if commit else "",
        # OpenBLAS picks its kernels from these when set (see bench/README.md).
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("OPENBLAS_", "OMP_", "MKL_"))},
    }


def short_name(info):
    """A folder-name-safe machine label: the GPU when there is one, else the CPU model and cores."""
    label = info["gpu"] or f"{info['cpu']}-{info['cores']}c"
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()
