"""The warm parent of every decoding child: `python -m app.kit.zygote SOCKET`, started by
`BoundedChildren` (`app/kit/bounded_child.py`) with a minimal environment.

It imports a decoding module (Pillow, pillow-heif, PyAV) the first time a request names it,
and forks one child per request. The child closes everything of the zygote's, sends its
pid, caps its address space and CPU time, runs `module.in_child(args)` on its one file, and
answers with one JSON line on its connection: `{"answer": ...}` or `{"refused": reason}`.
A crash or a limit ends it with no answer. The zygote is single-threaded (a fork copies
one thread), reads nothing untrusted, and exits when its stdin closes: when its server
does.
"""

import contextlib
import importlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
from types import ModuleType
from typing import Any

from app.kit.bounded_child import ChildRefused

REQUEST_SECONDS = 5.0  # the server writes its request at once
MAX_FD = os.sysconf("SC_OPEN_MAX")


def main() -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):  # a zygote before this one died
        os.unlink(sys.argv[1])
    listener.bind(sys.argv[1])
    os.chmod(sys.argv[1], 0o600)
    listener.listen(128)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children
    print("ready", flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, sys.stdout.fileno())
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                connection, _ = listener.accept()
                _serve(connection, devnull)
            elif not os.read(sys.stdin.fileno(), 4096):  # the server is gone
                return


def _serve(connection: socket.socket, devnull: int) -> None:
    with connection:
        connection.settimeout(REQUEST_SECONDS)
        try:
            request = json.loads(connection.makefile("rb").readline())
        except (OSError, ValueError):
            return
        module = importlib.import_module(request["module"])  # here: warm for the next file
        if os.fork() == 0:
            try:
                os.dup2(devnull, sys.stdin.fileno())
                kept = connection.fileno()  # nothing else of the zygote's: no listener, pipe
                os.closerange(3, kept)
                os.closerange(kept + 1, MAX_FD)
                _child(connection, module, request)
            finally:
                os._exit(1)  # whatever happened, the zygote's code goes no further here


def _child(connection: socket.socket, module: ModuleType, request: dict[str, Any]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    connection.settimeout(None)
    connection.sendall(b"%d\n" % os.getpid())
    memory, cpu = request["memory_bytes"], request["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    try:
        outcome = {"answer": module.in_child(request["args"])}
    except ChildRefused as exc:
        outcome = {"refused": str(exc)}
    connection.sendall(json.dumps(outcome).encode() + b"\n")
    os._exit(0)


if __name__ == "__main__":
    main()
