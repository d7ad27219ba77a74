#!/usr/bin/python3
"""tests/config/test_compose.py: docker-compose.yml keeps its safe defaults (docs/deployment.md).
Docker does not run on the build machines, so the file is checked by reading it: every published
port is bound to 127.0.0.1; the sample tokens stay refused unless KPI_ALLOW_SAMPLE_TOKENS is set
by the user; each service with a database logs in with its own role, never the owner; only the
one-shot migrate service uses the owner; no Kafka client variable can collide with the plain
KAFKA_* names a platform injects. Run by ctest as config.compose (Debian's python3-yaml)."""
import os
import re
import sys

import yaml

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def expand_default(value):
    """${NAME:-default} as compose expands it with NAME unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


with open(os.path.join(ROOT, "docker-compose.yml"), encoding="utf-8") as f:
    doc = yaml.safe_load(f)
services = doc["services"]

for name, svc in services.items():
    for port in svc.get("ports", []):
        check(str(port).startswith("127.0.0.1:"), f"{name}: port {port} is not bound to 127.0.0.1")

for name in ("ingest", "evaluator", "notifier"):
    env = services[name]["environment"]
    check(expand_default(env.get("KPI_ALLOW_SAMPLE_TOKENS", "0")) in ("0", ""),
          f"{name}: sample tokens allowed by default")
    for key in env:
        check(not key.startswith("KAFKA_"), f"{name}: {key} is not a KPI_KAFKA_PROP_ variable")
    url = expand_default(env.get("DATABASE_URL", ""))
    if name == "ingest":
        check(url == "", "ingest needs no database")
    else:
        m = re.match(r"postgresql://([^:@]+)", url)
        check(m is not None and m.group(1) not in ("postgres",),
              f"{name}: logs in as the owner ({url})")
        deps = services[name].get("depends_on", {})
        check(deps.get("migrate", {}).get("condition") == "service_completed_successfully",
              f"{name}: does not wait for the migrate service")

check(services["migrate"]["command"] == ["kpi-admin", "migrate"], "migrate: wrong command")
init = os.path.join(ROOT, "config", "postgres", "10-kpi-roles.sh")
with open(init, encoding="utf-8") as f:
    text = f.read()
for group, login in (("kpi_evaluator", "evaluator"), ("kpi_notifier", "notifier"),
                     ("kpi_reader", "reader")):
    check(f"CREATE ROLE {login} LOGIN" in text and f"IN ROLE {group}" in text,
          f"{init}: no login role {login} in {group}")

for f in failures:
    print("FAIL:", f)
print(f"{0 if failures else 1} passed, {1 if failures else 0} failed")
sys.exit(1 if failures else 0)
