"""The worker: a supervisor process that leases tasks from the queen, fetches their blobs
into a disk cache, runs them in executor child processes (the only place FHE runs), and
uploads and posts the results, heartbeating while it works.

Modules: ``settings`` (``WorkerSettings``), ``transport`` (HTTP to the queen), ``cache``
(blobs on disk, LRU within a byte budget), ``executor`` (child processes and their pool),
``supervisor`` (the loop, heartbeats and signals; :func:`run`), ``faults`` (fault
injection for tests and chaos: ``HSWARM_FAULT``). It never imports the queen, the
client or the CLI.
"""

from hswarm.worker.settings import WorkerSettings
from hswarm.worker.supervisor import Supervisor, run

__all__ = ["Supervisor", "WorkerSettings", "run"]
