#!/usr/bin/python3
"""bench/evaluator_gen.py: N measurement records for bench_evaluator.sh, written twice with the
same rows: KEY<TAB>JSON lines for `kcat -P -K '\t'`, and CSV for psql `\\copy measurements`.

usage: evaluator_gen.py N KCAT_FILE CSV_FILE
"""
import datetime
import json
import random
import sys
import uuid

# The shipped catalog's measures: (id, department, unit, kind).
MEASURES = [
    ("g2-uiturn-4-supporters", "kikaku", "person", "level"),
    ("g3-kosodate-3-maternity-grants", "kosodate", "case", "cumulative"),
    ("g3-kosodate-8-school-lunch", "kyoiku", "school", "level"),
    ("g4-digital-1-konbini-issuance", "shimin", "percent", "ratio"),
    ("g4-digital-2-signage", "kikaku", "facility", "level"),
    ("g4-digital-3-boshi-app-users", "kosodate", "person", "level"),
    ("g4-digital-4-hoiku-app-rate", "kosodate", "percent", "maintain"),
    ("g4-carbon-1-zero-carbon-plan", "kankyo", "plan", "milestone"),
    ("g4-carbon-2-led-rate", "kankyo", "percent", "level"),
]
START = datetime.date(2022, 4, 1)   # FY2022 .. FY2024
DAYS = (datetime.date(2025, 3, 31) - START).days + 1


def fiscal_year(d):
    return d.year if d.month >= 4 else d.year - 1


def main():
    n = int(sys.argv[1])
    rnd = random.Random(20240401)
    with open(sys.argv[2], "w", encoding="utf-8") as kc, open(sys.argv[3], "w", encoding="utf-8") as cs:
        for i in range(n):
            mid, dept, unit, kind = MEASURES[i % len(MEASURES)]
            day = START + datetime.timedelta(days=rnd.randrange(DAYS))
            component = None
            if kind == "milestone":
                value = 1 if rnd.random() < 0.1 else 0
            elif kind == "ratio":
                component = "numerator" if i % 2 else "denominator"
                value = rnd.randint(1, 20)
            elif unit == "percent":
                value = round(rnd.uniform(10, 99), 1)
            else:
                value = rnd.randint(0, 60)
            eid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            received = "2025-04-01T00:00:00.000Z"
            rec = {"schema": "kpi.measurement/1", "event_id": eid, "measure_id": mid,
                   "department": dept, "observed_at": day.isoformat(), "value": value,
                   "unit": unit, "received_at": received}
            if component:
                rec["component"] = component
            kc.write(mid + "\t" + json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
            cs.write(",".join([eid, mid, dept, day.isoformat() + "T00:00:00+09:00", day.isoformat(),
                               str(fiscal_year(day)), repr(value) if isinstance(value, float) else str(value),
                               unit, component or "", "", received, "", ""]) + "\n")


if __name__ == "__main__":
    main()
