#!/usr/bin/python3
"""bench/smtp_sink.py: a minimal SMTP sink for bench/bench_notifier.sh (bench only).

It answers the commands a client sends (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, with
PIPELINING advertised and honoured: every complete command line in a read is answered, in
order, in one write) and counts the messages it accepted; it stores nothing. Its purpose is
to show whether aiosmtpd (which parses, and writes every message to a Maildir) is the limit
of a run: the same senders against a sink that does almost no work per message.

  smtp_sink.py PORT COUNT_FILE [PROCESSES [MAILDIR]]

PROCESSES (default 1) processes share PORT with SO_REUSEPORT, so the kernel spreads the
connections over them. On SIGTERM each process adds its count to COUNT_FILE (one line per
process) and exits. With MAILDIR, each process is instead an aiosmtpd server with the
Mailbox handler into MAILDIR, exactly what scripts/stack.sh runs, only several of them on one
port (that shows whether one aiosmtpd process, which uses one core, is the limit).

On SIGUSR1 each null sink process appends "COUNT FIRST LAST" to COUNT_FILE.span (the messages
it accepted since the previous SIGUSR1, and the wall-clock times, epoch seconds, at which it
answered the first and the last of them with 250) and starts counting afresh; the first
process forwards the signal to the others. bench_notifier.sh times both senders' steady rate
with it, from the first mail to the last, leaving out what comes before the first mail
(process start, connection set-up, the first claim).
"""
import asyncio
import ctypes
import os
import signal
import socket
import sys
import time

GREETING = b"220 sink ESMTP\r\n"
EHLO = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n"


class Sink(asyncio.Protocol):
    counter = [0]
    # Since the last SIGUSR1: messages accepted, time of the first and the last 250.
    span = [0, 0.0, 0.0]

    def connection_made(self, transport):
        self.t = transport
        self.buf = b""
        self.in_data = False
        transport.write(GREETING)

    def data_received(self, data):
        self.buf += data
        out = []
        while True:
            if self.in_data:
                # The end-of-data marker: a line holding a single dot.
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    # Keep only what could start the marker.
                    if len(self.buf) > 4:
                        self.buf = self.buf[-4:]
                    break
                self.buf = self.buf[end + 5:]
                self.in_data = False
                Sink.counter[0] += 1
                now = time.time()
                if Sink.span[0] == 0:
                    Sink.span[1] = now
                Sink.span[0] += 1
                Sink.span[2] = now
                out.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            nl = self.buf.find(b"\r\n")
            if nl < 0:
                break
            line, self.buf = self.buf[:nl], self.buf[nl + 2:]
            verb = line[:4].upper()
            if verb in (b"EHLO",):
                out.append(EHLO)
            elif verb == b"HELO":
                out.append(b"250 sink\r\n")
            elif verb == b"DATA":
                out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.in_data = True
                # The data may start with the line right after DATA: "\r\n." must match at the
                # very start too.
                self.buf = b"\r\n" + self.buf
            elif verb == b"QUIT":
                out.append(b"221 Bye\r\n")
                self.t.write(b"".join(out))
                self.t.close()
                return
            else:  # MAIL, RCPT, RSET, NOOP and anything else
                out.append(b"250 OK\r\n")
        if out:
            self.t.write(b"".join(out))


def factory(maildir):
    if not maildir:
        return Sink
    from aiosmtpd.handlers import Mailbox
    from aiosmtpd.smtp import SMTP
    handler = Mailbox(maildir)
    return lambda: SMTP(handler)


def report_span(count_file, children):
    for c in children:
        os.kill(c, signal.SIGUSR1)
    n, first, last = Sink.span
    with open(count_file + ".span", "a") as f:
        f.write("%d %.6f %.6f\n" % (n, first, last))
    Sink.span[:] = [0, 0.0, 0.0]


def serve(port, count_file, maildir, children=()):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    server = loop.run_until_complete(loop.create_server(factory(maildir), sock=sock))

    def stop():
        with open(count_file, "a") as f:
            f.write("%d\n" % Sink.counter[0])
        server.close()
        loop.stop()

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGUSR1, report_span, count_file, list(children))
    loop.run_forever()


def main():
    port, count_file = int(sys.argv[1]), sys.argv[2]
    procs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    maildir = sys.argv[4] if len(sys.argv) > 4 else None
    if maildir:
        # Made once before the fork: processes creating it at once raced (FileExistsError),
        # and a sink that died so left the bench waiting for mails that could not arrive.
        import mailbox
        mailbox.Maildir(maildir, create=True)
    children = []
    for _ in range(procs - 1):
        pid = os.fork()
        if pid == 0:
            # Stop with the parent whatever happens to it (PR_SET_PDEATHSIG), so that no
            # sink outlives the bench.
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)
            if os.getppid() == 1:
                os._exit(0)
            serve(port, count_file, maildir)
            os._exit(0)
        children.append(pid)
    serve(port, count_file, maildir, children)
    for c in children:
        os.kill(c, signal.SIGTERM)
        os.waitpid(c, 0)


if __name__ == "__main__":
    main()
