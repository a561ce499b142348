"""Which devices torch sees, asked of the library's Python in the background (importing torch and
probing CUDA can take seconds)."""
from __future__ import annotations

import json
from typing import List, Tuple

from .errors import ModuleError
from .jobs import BackgroundJob, JobStarter


def start_device_query(start_job: JobStarter) -> BackgroundJob:
    """Start ``braintumorseg devices --json``."""
    return start_job(["devices", "--json"])


def devices_from(job: BackgroundJob) -> Tuple[List[str], str]:
    """(devices such as cpu, cuda:0, mps; one line on the hardware) from a finished query."""
    if job.poll() != 0:
        raise ModuleError(job.error)
    info = json.loads(job.stdout[-1])
    return list(info["available"]), str(info["description"])
