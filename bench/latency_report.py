#!/usr/bin/python3
"""bench/latency_report.py: the figures of bench_latency.sh from latency_load's files.

usage: latency_report.py kafka RATE KAFKA_OUT
       latency_report.py e2e RATE TEMPLATES HTTP_OUT POLL_OUT

kafka: produce->consume latency of every record, and delivery report->consume (signed: with
       one broker the consumer often has the record before the producer has its ack).
e2e:   for every POST answered 202, the time from the 202 to the first read of `attainment`
       whose `events` counts it. A measure's events all go to one partition (key measure_id)
       in the order the ingest produced them, and the ingest answers in delivery order, so
       the k-th 202 of a measure is its k-th stored event: it is reflected once that
       measure's events reach (events before the run) + k. Also split into 202 -> start of
       the evaluator's transaction (attainment.updated_at = now() of the transaction) and
       transaction start -> seen.
Prints one line per figure, "LAT <kind> rate=<r> n=<n> p50_ms=<x> p99_ms=<y> ...".
"""
import sys


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(q / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


def summary(name, rate, vals_ns, extra=""):
    v = sorted(x / 1e6 for x in vals_ns)
    print("LAT %s rate=%s n=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f%s"
          % (name, rate, len(v), pct(v, 50), pct(v, 99), v[-1] if v else float("nan"), extra))


def kafka(rate, path):
    e2e, after_ack, missing = [], [], 0
    with open(path) as f:
        for line in f:
            _, p, d, c = (int(x) for x in line.split())
            if c == 0 or d == 0:
                missing += 1
                continue
            e2e.append(c - p)
            after_ack.append(c - d)  # negative: the consumer saw it before the ack came back
    summary("kafka_produce_consume", rate, e2e, " missing=%d" % missing)
    summary("kafka_ack_consume", rate, after_ack)


def load_polls(path):
    """measure_id -> ([(events, seen_ns, updated_ns)] in read order, events at the first read)."""
    polls = {}
    with open(path) as f:
        for line in f:
            seen, mid, ev, upd = line.split()
            polls.setdefault(mid, []).append((int(ev), int(seen), int(upd) * 1000))
    return {m: (rows, rows[0][0]) for m, rows in polls.items()}


def e2e(rate, templates, http_out, poll_out):
    measures = [line.split("\t", 1)[0] for line in open(templates) if line.strip()]
    polls = load_polls(poll_out)
    acks = {}
    other = 0
    with open(http_out) as f:
        for line in f:
            _, m, w, a, status = (int(x) for x in line.split())
            if status != 202:
                other += 1
                continue
            acks.setdefault(measures[m], []).append((a, a - w))
    total, to_txn, in_txn, answer, unseen = [], [], [], [], 0
    for mid, lst in acks.items():
        lst.sort()
        rows, base = polls.get(mid, ([], 0))
        j = 0
        for k, (ack, ans) in enumerate(lst, start=1):
            while j < len(rows) and rows[j][0] < base + k:
                j += 1
            answer.append(ans)
            if j == len(rows):
                unseen += 1
                continue
            _, seen, upd = rows[j]
            total.append(max(0, seen - ack))
            to_txn.append(max(0, upd - ack))
            in_txn.append(max(0, seen - max(upd, ack)))
    summary("e2e_202_to_attainment", rate, total, " not_202=%d unseen=%d" % (other, unseen))
    summary("e2e_202_to_txn_start", rate, to_txn)
    summary("e2e_txn_start_to_seen", rate, in_txn)
    summary("ingest_post_to_202", rate, answer)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "kafka":
        kafka(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 6 and sys.argv[1] == "e2e":
        e2e(*sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
