#!/bin/sh
# tools/check_nginx_conf.sh: deploy/nginx/kpi.conf passes `nginx -t`, and the harness would see
# it fail.
#   tools/check_nginx_conf.sh SOURCE_DIR WORK_DIR
# Makes a throwaway self-signed certificate with openssl in WORK_DIR (the build tree), copies
# kpi.conf there with the certificate paths substituted, writes a minimal nginx.conf that
# includes it (pid, error and access logs, temp paths all inside WORK_DIR), and runs
# `nginx -t -p WORK_DIR -e ... -c ...`: nothing under /etc/nginx or /var is read or written.
# Then it breaks a copy (an invalid directive value) and requires `nginx -t` to fail on it, so a
# check that passes is one that could have failed. Also checks that client_max_body_size equals
# ingest's default body limit (docs/http.md: 1 MiB).
set -eu
[ $# -eq 2 ] || { echo "usage: $0 SOURCE_DIR WORK_DIR" >&2; exit 2; }
src=$1
work=$2
conf=$src/deploy/nginx/kpi.conf
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "nginx not installed (scripts/bootstrap.sh installs nginx-light)" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work/logs" "$work/tmp"
work=$(cd "$work" && pwd)
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=kpi.test \
  -keyout "$work/test.key" -out "$work/test.pem" 2>/dev/null

# The include as an operator would install it, with this test's certificate.
sed -e "s|^\( *ssl_certificate \).*;|\1$work/test.pem;|" \
  -e "s|^\( *ssl_certificate_key \).*;|\1$work/test.key;|" "$conf" >"$work/kpi.conf"
grep -q "$work/test.pem" "$work/kpi.conf" || { echo "kpi.conf: no ssl_certificate line to substitute" >&2; exit 1; }

write_main() { # INCLUDE: a main nginx.conf around the include
  cat >"$work/nginx.conf" <<EOF
pid $work/nginx.pid;
error_log $work/logs/error.log;
events {}
http {
    access_log $work/logs/access.log;
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;
    include $1;
}
EOF
}

nginx_t() {
  "$nginx" -t -q -p "$work/" -e "$work/logs/error.log" -c "$work/nginx.conf"
}

status=0
write_main "$work/kpi.conf"
if nginx_t; then
  echo "nginx -t: deploy/nginx/kpi.conf is valid"
else
  echo "nginx -t: deploy/nginx/kpi.conf is invalid (above)"
  status=1
fi

# The same harness must reject a broken copy.
sed 's|^\( *client_max_body_size \).*;|\1one-megabyte;|' "$work/kpi.conf" >"$work/broken.conf"
write_main "$work/broken.conf"
if nginx_t 2>"$work/broken.err"; then
  echo "nginx -t accepted a broken copy: the check cannot fail"
  status=1
elif ! grep -q 'client_max_body_size' "$work/broken.err"; then
  echo "nginx -t rejected the broken copy for another reason:"
  cat "$work/broken.err"
  status=1
else
  echo "nginx -t: a broken copy is rejected ($(head -n1 "$work/broken.err"))"
fi

# Body limit: nginx refuses larger bodies before ingest would (413 either way), so both agree.
grep -qE '^ *client_max_body_size 1m;' "$conf" ||
  { echo "kpi.conf: client_max_body_size must be 1m (ingest's KPI_HTTP_MAX_BODY default)"; status=1; }
grep -q 'max_body_bytes = 1024 \* 1024;' "$src/common/kpi_http.c" ||
  { echo "kpi_http.c's default body limit changed: update client_max_body_size in kpi.conf"; status=1; }
exit $status
