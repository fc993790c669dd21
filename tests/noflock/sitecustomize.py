"""Test shim: a file system without flock (Lustre mounted `noflock`), in the subprocesses and SLURM jobs
of a test. A test puts this folder first on PYTHONPATH and sets GDM_TEST_NOFLOCK to

- "all": every `fcntl.flock` of the process raises OSError(ENOSYS), as on Lustre noflock;
- "ranks": only in SLURM tasks with SLURM_PROCID > 0 (the DDP ranks that must never touch a lease).

With GDM_TEST_NOFLOCK_LOG set, each process appends one JSON line when the shim is active in it
("loaded", with its rank) and one per flock call it refused (with the file's path), so a test can
prove that the shim ran where it should and what was tried.
"""

import errno
import fcntl
import json
import os


def _log(**record) -> None:
    path = os.environ.get("GDM_TEST_NOFLOCK_LOG")
    if path:
        with open(path, "a") as handle:  # one short line per write: appends do not interleave
            handle.write(json.dumps({"pid": os.getpid(), "rank": int(os.environ.get("SLURM_PROCID", 0)),
                                     **record}) + "\n")


def _refused(fd, operation) -> None:
    try:
        target = os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}")
    except OSError:
        target = None
    _log(what="flock", path=target)
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))


def _active() -> bool:
    mode = os.environ.get("GDM_TEST_NOFLOCK")
    return mode == "all" or (mode == "ranks" and int(os.environ.get("SLURM_PROCID", 0)) > 0)


if _active():
    fcntl.flock = _refused
    _log(what="loaded")
