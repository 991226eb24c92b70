"""Forward 127.0.0.1:PORT in this network namespace to 127.0.0.1:PORT inside another process's namespace.

The test adbd listens on every interface with no authentication, so it runs in its own network namespace
(`unshare -n`); this forwarder makes it reachable on the host's loopback only. It binds the listening socket
first, then joins the target namespace (setns) so that its outgoing connections are made in there.
usage: nsforward.py PID PORT
"""
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    fd = os.open("/proc/%d/ns/net" % pid, os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        sys.exit("nsforward: setns into pid %d failed: %s" % (pid, os.strerror(ctypes.get_errno())))
    os.close(fd)
    print("nsforward: 127.0.0.1:%d -> namespace of pid %d" % (port, pid), flush=True)
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            upstream.settimeout(None)
        except OSError as exc:
            print("nsforward: upstream connect failed: %s" % exc, flush=True)
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    main()
