#!/usr/bin/env bash
# scripts/read-mail.sh: prints the latest mails of a Maildir decoded (headers, text body), the
# newest last. Debian's /usr/bin/python3 and its email package do the MIME decoding (the
# python3 first on PATH may be another interpreter without them).
#   scripts/read-mail.sh MAILDIR [N [TO]]   N mails (default 1); TO: only mails whose To
#                                           header contains TO
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  echo "usage: $0 MAILDIR [N [TO]]" >&2
  exit 2
fi
exec /usr/bin/python3 - "$1" "${2:-1}" "${3:-}" <<'PYEOF'
import email, email.policy, glob, os, signal, sys

signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head

maildir, n, to = sys.argv[1], int(sys.argv[2]), sys.argv[3]
files = [f for d in ("new", "cur") for f in glob.glob(os.path.join(maildir, d, "*"))]
files.sort(key=os.path.getmtime)
mails = []
for f in files:
    with open(f, "rb") as fh:
        m = email.message_from_binary_file(fh, policy=email.policy.default)
    if to in str(m["To"] or ""):
        mails.append((f, m))
if not mails:
    print(f"no mail{' to ' + to if to else ''} in {maildir} (yet: the notifier waits for its "
          "group wait, 5 s in the local run)")
    sys.exit(1)
for f, m in mails[-n:]:
    print("=" * 72)
    print(f"File: {f}")
    for h in ("Date", "From", "To", "Cc", "Subject"):
        if m[h] is not None:
            print(f"{h}: {m[h]}")
    print()
    body = m.get_body(preferencelist=("plain", "html"))
    print(body.get_content() if body is not None else "(no text part)")
print(f"({len(mails)} of {len(files)} mail(s) in {maildir} shown{' (To contains ' + to + ')' if to else ''}: the latest {min(n, len(mails))})")
PYEOF
