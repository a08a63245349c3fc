"""The image's start, then ``gogs web`` as git.

What the gogs/gogs image does before Gogs runs (docker/start.sh create_volume_subfolder, docker/s6/gogs/setup,
docker/s6/gogs/run; the same in effect at 0.11.19 and 0.13.4): /data/gogs/{data,conf,log}, /data/git and
/data/ssh exist; /app/gogs/log and /app/gogs/data link to /data/gogs/log and /data/gogs/data; /data belongs to
git; then ``gosu git /app/gogs/gogs web`` with USER=git (the user docker/build.sh or docker/build/finalize.sh
adds, home /data/git).  The stand-in binds :3000 and :22 first (22 stands for the image's sshd, which runs as
root under s6: a banner, no SSH), then becomes git the way gosu does.

At start, GlobalInit reads GOGS_CUSTOM/conf/app.ini; an installed Gogs whose RUN_USER is not the current user
stops (pkg/setting/setting.go NewContext, internal/conf/conf.go Init).
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import sys
import threading
from http.server import ThreadingHTTPServer

from . import system
from .release import current
from .server import App, Handler

RUN_AS = "git"


def main() -> None:
    release = current()
    custom = os.environ.get("GOGS_CUSTOM", "/data/gogs")
    if os.getuid() == 0:
        _prepare_volume(custom)
    http = ThreadingHTTPServer(("0.0.0.0", 3000), Handler)
    ssh = socket.create_server(("0.0.0.0", 22))
    if os.getuid() == 0:
        _become(RUN_AS)
    os.chdir("/app/gogs")
    app = App(release, os.path.join(custom, "conf", "app.ini"))
    _check_run_user(app)
    Handler.app = app
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 gets no default handler: stop promptly
    threading.Thread(target=_ssh_banner, args=(ssh,), daemon=True).start()
    state = "installed" if app.install_lock else "not installed: /install"
    print(f"Gogs {release.app_ver} (stand-in, {release.handler}) listening on :3000 ({state})", flush=True)
    http.serve_forever()


def _prepare_volume(custom: str) -> None:
    for folder in (f"{custom}/data", f"{custom}/conf", f"{custom}/log", "/data/git", "/data/ssh", "/app/gogs"):
        os.makedirs(folder, exist_ok=True)
    for link, target in (("/app/gogs/log", f"{custom}/log"), ("/app/gogs/data", f"{custom}/data")):
        if os.path.islink(link) or os.path.exists(link):
            os.remove(link)
        os.symlink(target, link)
    user = pwd.getpwnam(RUN_AS)
    for root, dirs, files in os.walk("/data"):
        for name in (root, *(os.path.join(root, n) for n in dirs + files)):
            os.lchown(name, user.pw_uid, user.pw_gid)
    os.chmod("/data", 0o755)


def _become(name: str) -> None:
    """gosu: the user's groups, gid and uid; HOME from /etc/passwd; the s6 script exports USER."""
    user = pwd.getpwnam(name)
    os.initgroups(name, user.pw_gid)
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ.update(USER=name, HOME=user.pw_dir)


def _check_run_user(app: App) -> None:
    if not app.install_lock:
        return
    run_user, current_user = app.settings[""].get("RUN_USER", ""), system.current_username(app.release)
    if run_user == current_user:
        return
    if app.release.version == "0.11.19":
        print(f"[FATAL] Expect user '{run_user}' but current user is: {current_user}", flush=True)
    else:
        print(
            f"[FATAL] Failed to initialize application: init configuration: user configured to run Gogs is "
            f'"{run_user}", but the current user is "{current_user}"',
            flush=True,
        )
    sys.exit(1)


def _ssh_banner(server: socket.socket) -> None:
    while True:
        conn, _ = server.accept()
        try:
            conn.sendall(b"SSH-2.0-OpenSSH\r\n")
        finally:
            conn.close()
