#!/usr/bin/python3
"""smtp_quirk_server.py: an SMTP server with one deliberate quirk, for
tests/integration/test_notifier_hardening.c. Run it with Debian's /usr/bin/python3 (aiosmtpd
1.4, python3-aiosmtpd):

  /usr/bin/python3 smtp_quirk_server.py --mode MODE --port P --maildir DIR

Modes:
- bad-utf8: stores every message (aiosmtpd.handlers.Mailbox, which adds X-Peer,
  X-MailFrom, X-RcptTo) and answers the end of DATA with "250 ok" followed by the bytes
  FF FE, which are not UTF-8.
- plain-auth: offers AUTH PLAIN/LOGIN without offering STARTTLS (a server whose STARTTLS
  was stripped by a man in the middle), accepts any credentials and stores the message.
  Every AUTH attempt is logged ("AUTH seen mechanism=..."); the credentials never are.
- reject-rcpt: refuses every recipient with "550 5.1.1 <address>: Recipient address
  rejected: User unknown", quoting the address as real servers do.
- tempfail-rcpt: answers every recipient with "451 4.3.0 <address>: Temporary lookup
  failure" (a reply about that mail, not about the relay), logged "TEMPFAIL rcpt".

One line per event on stdout, flushed: "READY port=P mode=M" once listening,
"DELIVERED rcpt=...", "AUTH seen mechanism=...", "REJECTED rcpt". Exits on SIGTERM/SIGINT,
when its parent process goes away, or after --lifetime seconds.
"""
import argparse
import logging
import os
import signal
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult


def say(line):
    print(line, flush=True)


class QuirkMailbox(Mailbox):
    def __init__(self, maildir, mode):
        super().__init__(maildir)
        self.mode = mode

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.mode == "reject-rcpt":
            say("REJECTED rcpt")
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if self.mode == "tempfail-rcpt":
            say("TEMPFAIL rcpt")
            return "451 4.3.0 <%s>: Temporary lookup failure" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        await super().handle_DATA(server, session, envelope)
        say("DELIVERED rcpt=%s auth=%s" % (",".join(envelope.rcpt_tos),
                                           "yes" if session.authenticated else "no"))
        if self.mode == "bad-utf8":
            # aiosmtpd's push() writes bytes as they are: the reply is not UTF-8.
            return b"250 ok \xff\xfe"
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data):
    say("AUTH seen mechanism=%s" % mechanism)
    return AuthResult(success=True, handled=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--mode", choices=["bad-utf8", "plain-auth", "reject-rcpt",
                                           "tempfail-rcpt"], required=True)
    ap.add_argument("--lifetime", type=float, default=300)
    args = ap.parse_args()
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    kwargs = {}
    if args.mode == "plain-auth":
        kwargs = dict(authenticator=authenticate, auth_require_tls=False, auth_required=False)
    controller = Controller(QuirkMailbox(args.maildir, args.mode), hostname=args.host,
                            port=args.port, server_hostname="localhost", **kwargs)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()
    controller.start()
    say("READY port=%d mode=%s" % (args.port, args.mode))
    waited = 0.0
    while not stop.wait(0.2):
        waited += 0.2
        if os.getppid() != parent or waited >= args.lifetime:
            break
    controller.stop()
    say("STOPPED")


if __name__ == "__main__":
    main()
