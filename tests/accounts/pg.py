"""A throwaway PostgreSQL server for tests (Debian's postgresql binaries, a tmp cluster)."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile


def _bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def start():
    """(url, stop) for a fresh cluster on a free port, or None when the binaries are missing."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        return None
    d = tempfile.mkdtemp(prefix="sdgate-pg-")
    # initdb refuses root: run the cluster as the postgres user then
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(d, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = os.path.join(d, "data")
    subprocess.run(as_user + [initdb, "-D", data, "-U", "sdgate", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run(as_user + [pg_ctl, "-D", data, "-w", "-l", os.path.join(d, "log"), "-o",
                              f"-p {port} -k {d} -h 127.0.0.1", "start"],
                   check=True, capture_output=True)

    def stop():
        subprocess.run(as_user + [pg_ctl, "-D", data, "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
    return f"postgresql://sdgate@127.0.0.1:{port}/postgres", stop
