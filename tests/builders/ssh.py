"""A real SSH server on loopback (asyncssh's create_server) for remote-device tests and benchmarks.

It has a generated host key, one authorized client key, SFTP, and a process factory that runs
each command through /bin/sh on this machine, as sshd does. Its commands run in their own
folder with TMPDIR set, so tests can see that the remote temp folder is gone afterwards.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from pathlib import Path

import asyncssh


class LoopbackServer:
    """asyncssh server on 127.0.0.1 in a thread with its own event loop."""

    def __init__(self, root: Path, *, sftp: bool = True):
        self.root = root
        self.sftp = sftp
        self.tmp = root / "remote-tmp"  # TMPDIR of every command: mkdtemp lands here
        self.cwd = root / "remote-cwd"
        self.tmp.mkdir()
        self.cwd.mkdir()
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key_file = root / "id_client"
        self.client_key.write_private_key(str(self.client_key_file))
        self.commands: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _start(self):
        authorized = asyncssh.import_authorized_keys(self.client_key.export_public_key().decode())
        return await asyncssh.create_server(
            asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[self.host_key], authorized_client_keys=authorized,
            process_factory=self._handle, sftp_factory=self.sftp, allow_scp=False)

    async def _handle(self, process) -> None:
        self.commands.append(process.command)
        env = {**os.environ, "TMPDIR": str(self.tmp)}
        child = await asyncio.create_subprocess_shell(process.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                      cwd=self.cwd, env=env)
        out, err = await child.communicate()
        process.stdout.write(out.decode())
        process.stderr.write(err.decode())
        process.exit(child.returncode)

    def known_hosts_line(self, key=None) -> str:
        blob = (key or self.host_key).export_public_key().decode().split()[:2]
        return f"[127.0.0.1]:{self.port} {' '.join(blob)}\n"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

