#!/usr/bin/python3
"""smtp_tls_auth_server.py: an SMTP server that insists on STARTTLS and AUTH, for
tests/integration/test_notifier_tls_auth.c. Run it with Debian's /usr/bin/python3 (aiosmtpd
1.4, python3-aiosmtpd):

  SMTP_FIXTURE_USER=u SMTP_FIXTURE_PASSWORD=p \
    /usr/bin/python3 smtp_tls_auth_server.py --port P --maildir DIR --cert C --key K

- STARTTLS with the given certificate; MAIL, RCPT and DATA before STARTTLS get 530
  (require_starttls), AUTH is offered only after STARTTLS (auth_require_tls) and is needed
  before MAIL (auth_required).
- Exactly one user/password pair is accepted (PLAIN or LOGIN); anything else gets 535.
- Mails go to the Maildir DIR (aiosmtpd.handlers.Mailbox, which adds X-Peer, X-MailFrom,
  X-RcptTo), with two more headers written from the SMTP session that carried them:
  X-Fixture-TLS (the TLS version and cipher, or "none") and X-Fixture-Auth (the
  authenticated user, or "none").
- One line per event on stdout, flushed: "READY port=P" once listening, "TLS ..." after
  each handshake, "AUTH ok|fail user=... mechanism=...", "DELIVERED rcpt=... tls=...
  auth=...". Passwords are never printed.
- Exits on SIGTERM/SIGINT, when its parent process goes away, or after --lifetime seconds,
  so a crashed or killed test cannot leave it behind.
"""
import argparse
import logging
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


def say(line):
    print(line, flush=True)


def tls_of(session):
    """'TLSv1.3 TLS_AES_256_GCM_SHA384' for a session after STARTTLS, else None."""
    extra = session.ssl
    if not extra:
        return None
    obj = extra.get("ssl_object")
    if obj is not None:
        return "%s %s" % (obj.version(), obj.cipher()[0])
    cipher = extra.get("cipher")
    return "%s %s" % (cipher[1], cipher[0]) if cipher else "unknown"


class RecordingMailbox(Mailbox):
    """Mailbox whose stored messages say whether their session was TLS and authenticated."""

    def prepare_message(self, session, envelope):
        message = super().prepare_message(session, envelope)
        tls = tls_of(session) or "none"
        user = "none"
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            user = session.auth_data.login.decode("utf-8", "replace")
        message["X-Fixture-TLS"] = tls
        message["X-Fixture-Auth"] = user
        say("DELIVERED rcpt=%s tls=%s auth=%s" % (",".join(envelope.rcpt_tos), tls, user))
        return message

    def handle_STARTTLS(self, server, session, envelope):
        # aiosmtpd calls this hook synchronously, once the handshake has completed.
        say("TLS peer=%s %s" % (session.peer, tls_of(session)))
        return True


def make_authenticator(user, password):
    want = (user.encode(), password.encode())

    def authenticate(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            say("AUTH fail mechanism=%s (unsupported data)" % mechanism)
            return AuthResult(success=False, handled=False)
        ok = (auth_data.login, auth_data.password) == want
        say("AUTH %s user=%s mechanism=%s tls=%s" % (
            "ok" if ok else "fail", auth_data.login.decode("utf-8", "replace"), mechanism,
            tls_of(session) or "none"))
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return authenticate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--lifetime", type=float, default=300)
    args = ap.parse_args()
    user = os.environ.get("SMTP_FIXTURE_USER")
    password = os.environ.get("SMTP_FIXTURE_PASSWORD")
    if not user or password is None:
        sys.exit("SMTP_FIXTURE_USER and SMTP_FIXTURE_PASSWORD must be set")

    # aiosmtpd logs every command at INFO and warns about its own deprecated login_data
    # on each AUTH; keep errors (a failed handshake's traceback) only.
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)

    handler = RecordingMailbox(args.maildir)
    controller = Controller(
        handler,
        hostname=args.host,
        port=args.port,
        server_hostname="localhost",
        tls_context=ctx,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=make_authenticator(user, password),
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()
    controller.start()
    say("READY port=%d aiosmtpd STARTTLS required, AUTH required" % args.port)
    waited = 0.0
    while not stop.wait(0.2):
        waited += 0.2
        if os.getppid() != parent:
            say("EXIT parent went away")
            break
        if waited >= args.lifetime:
            say("EXIT lifetime over")
            break
    controller.stop()
    say("STOPPED")


if __name__ == "__main__":
    main()
