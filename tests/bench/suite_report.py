#!/usr/bin/env python3
"""suite_report.py OUT [--check]: turn run-suite.sh's run reports into OUT/suite.json and OUT/suite.md.

Reads OUT/versions.json, OUT/runs/*.json (one herald-bench report per run, with the load
average before it) and OUT/history/history.json (run-history.sh, for S5 and S6). Computes, per
scenario, each server's result and the Herald/Nchan and Herald/ceiling ratios, checks the issue's
targets, prints the markdown and writes both files. Nothing here is measured: it only reads.
--check: exit 1 unless every run delivered every message, verified (correctness, not speed).
"""
import glob
import json
import os
import sys

BENCH_BOUND_PCT = 90.0  # herald-bench's receiver above this: the load generator may be the limit
SERVERS = ["herald", "nchan", "ceiling"]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def num(v, fmt="{:,.0f}"):
    if v is None or v == "" or (isinstance(v, float) and v != v):
        return "-"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def ratio(a, b):
    return a / b if a and b else None


def get(r, *path, default=None):
    for k in path:
        if not isinstance(r, dict) or k not in r:
            return default
        r = r[k]
    return r


def per_cpu_s(r):
    """Deliveries per second of server CPU: what one full core would do at this batching."""
    cpu = get(r, "gateway", "cpu_pct")
    dps = r.get("delivered_per_s")
    return dps / (cpu / 100.0) if cpu and cpu > 0 and dps else None


def held(r, p99_limit, min_delivered):
    try:
        return (r.get("ok") is True and r["latency_ms"]["p99"] <= p99_limit and
                r["delivered_per_s"] >= min_delivered * r["expected_delivered_per_s"])
    except (KeyError, TypeError):
        return False


def stepped(runs, scen, p99_limit, min_delivered, md, summary):
    rows = sorted((r for r in runs if r.get("scenario") == scen),
                  key=lambda r: (r.get("target_rate", 0), SERVERS.index(r["server"])
                                 if r.get("server") in SERVERS else 9))
    if not rows:
        return
    conns = max(r.get("connections", 0) for r in rows)
    md.append(f"\n### {scen.upper()}: {conns:,} connections on one channel, 100-byte payloads, "
              "publish rate stepped\n")
    md.append("| publish msg/s | server | expected deliveries/s | delivered/s | p50 ms | p99 ms | "
              "p99.9 ms | server CPU % | deliveries per server CPU-second | bench receiver CPU % | "
              "publisher CPU % | msgs/read | load 1/5/15 before | other work % of machine | verified | held |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    best = {}
    p99_at = {}
    for r in rows:
        h = held(r, p99_limit, min_delivered)
        s = r.get("server")
        rate = r.get("target_rate")
        md.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            num(rate), s, num(r.get("expected_delivered_per_s")), num(r.get("delivered_per_s")),
            num(get(r, "latency_ms", "p50"), "{:.2f}"), num(get(r, "latency_ms", "p99"), "{:.2f}"),
            num(get(r, "latency_ms", "p999"), "{:.2f}"), num(get(r, "gateway", "cpu_pct"), "{:.0f}"),
            num(per_cpu_s(r)),
            num(get(r, "bench_cpu", "receiver_pct"), "{:.0f}"),
            num(get(r, "bench_cpu", "publisher_pct"), "{:.0f}"),
            num(r.get("messages_per_read"), "{:.1f}"),
            " ".join(num(x, "{:.2f}") for x in r.get("loadavg_before", [])),
            num(r.get("foreign_busy_pct"), "{:.0f}"),
            "yes" if r.get("ok") is True else "NO: " + str(r.get("first_error") or
                                                            f"gaps {r.get('gaps')} dups {r.get('duplicates')} missing {r.get('missing')}"),
            "yes" if h else "no"))
        if h:
            p99_at.setdefault(rate, {})[s] = get(r, "latency_ms", "p99")
            if r["delivered_per_s"] > best.get(s, {}).get("delivered_per_s", 0):
                best[s] = r
    last = {}
    for r in rows:
        last[r.get("server")] = r
    md.append("")
    md.append("| server | highest sustained deliveries/s | at msg/s | p99 ms there | bench receiver CPU % "
              "there | stopped by | most deliveries per server CPU-second (steps that held) |")
    md.append("|---|---|---|---|---|---|---|")
    res = {}
    for s in SERVERS:
        if s not in last:
            continue
        b = best.get(s)
        stop = last[s]
        stopped = ("nothing: the last step held" if held(stop, p99_limit, min_delivered) else
                   "{} msg/s: delivered {} of {}/s, p99 {} ms{}".format(
                       num(stop.get("target_rate")), num(stop.get("delivered_per_s")),
                       num(stop.get("expected_delivered_per_s")),
                       num(get(stop, "latency_ms", "p99"), "{:.1f}"),
                       "" if stop.get("ok") is True else ", delivery errors"))
        rx = get(b, "bench_cpu", "receiver_pct") if b else None
        note = " (load generator near its limit)" if rx and rx >= BENCH_BOUND_PCT else ""
        eff = max((per_cpu_s(r) or 0 for r in rows
                   if r.get("server") == s and held(r, p99_limit, min_delivered)), default=None)
        md.append("| {} | {} | {} | {} | {}{} | {} | {} |".format(
            s, num(b and b["delivered_per_s"]), num(b and b.get("target_rate")),
            num(b and get(b, "latency_ms", "p99"), "{:.2f}"), num(rx, "{:.0f}"), note, stopped,
            num(eff or None)))
        res[s] = {"max_sustained_per_s": b and b["delivered_per_s"], "max_per_cpu_s": eff or None,
                  "at_rate": b and b.get("target_rate"), "p99_ms": b and get(b, "latency_ms", "p99"),
                  "bench_receiver_pct": rx, "stopped_by": stopped}
    hb = get(res, "herald", "max_sustained_per_s")
    he = get(res, "herald", "max_per_cpu_s")
    ratios = {"herald_over_nchan": ratio(hb, get(res, "nchan", "max_sustained_per_s")),
              "herald_over_ceiling": ratio(hb, get(res, "ceiling", "max_sustained_per_s")),
              "per_cpu_s_herald_over_nchan": ratio(he, get(res, "nchan", "max_per_cpu_s")),
              "per_cpu_s_herald_over_ceiling": ratio(he, get(res, "ceiling", "max_per_cpu_s"))}
    p99r = {str(rate): ratio(v.get("herald"), v.get("ceiling")) for rate, v in sorted(p99_at.items())
            if v.get("herald") and v.get("ceiling")}
    worst = max((x for x in p99r.values() if x is not None), default=None)
    md.append("")
    md.append("Herald/Nchan {}x, Herald/ceiling {}x (highest sustained deliveries/s); per server "
              "CPU-second: Herald/Nchan {}x, Herald/ceiling {}x. "
              "Herald's p99 over the ceiling's at the same rate (both held): {}.".format(
                  num(ratios["herald_over_nchan"], "{:.2f}"),
                  num(ratios["herald_over_ceiling"], "{:.2f}"),
                  num(ratios["per_cpu_s_herald_over_nchan"], "{:.2f}"),
                  num(ratios["per_cpu_s_herald_over_ceiling"], "{:.2f}"),
                  ", ".join(f"{int(float(k)):,}: {num(v, '{:.2f}')}x" for k, v in p99r.items()) or "-"))
    summary[scen] = {"servers": res, "ratios": ratios, "p99_herald_over_ceiling": p99r,
                     "p99_herald_over_ceiling_worst": worst}


def single(runs, scen, title, md, summary, idle=False):
    rows = [r for r in runs if r.get("scenario") == scen]
    rows.sort(key=lambda r: SERVERS.index(r["server"]) if r.get("server") in SERVERS else 9)
    if not rows:
        return
    md.append(f"\n### {scen.upper()}: {title}\n")
    res = {}
    if idle:
        md.append("| server | connections | subscribed | failed | connect s | RSS before KiB | "
                  "RSS subscribed KiB | KiB per connection | load 1/5/15 before | other work % |")
        md.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            md.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                r.get("server"), num(r.get("connections")), num(r.get("subscribed")),
                num(r.get("failed")), num(r.get("connect_s"), "{:.1f}"),
                num(get(r, "gateway", "rss_before_kib")), num(get(r, "gateway", "rss_subscribed_kib")),
                num(get(r, "gateway", "rss_per_conn_kib"), "{:.2f}"),
                " ".join(num(x, "{:.2f}") for x in r.get("loadavg_before", [])),
                num(r.get("foreign_busy_pct"), "{:.0f}")))
            ok = r.get("subscribed") == r.get("connections") and r.get("subscribed")
            res[r["server"]] = {"kib_per_conn": get(r, "gateway", "rss_per_conn_kib") if ok else None,
                                "subscribed": r.get("subscribed"), "connections": r.get("connections")}
        key = "kib_per_conn"
        note = "RSS per connection (lower is better)"
    else:
        md.append("| server | expected deliveries/s | delivered/s | p50 ms | p99 ms | p99.9 ms | "
                  "server CPU % | server CPU us per delivery | bench receiver CPU % | publisher CPU % | "
                  "load 1/5/15 before | other work % | verified |")
        md.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            cpu = get(r, "gateway", "cpu_pct")
            dps = r.get("delivered_per_s")
            us = cpu / 100.0 / dps * 1e6 if cpu is not None and cpu >= 0 and dps else None
            md.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                r.get("server"), num(r.get("expected_delivered_per_s")), num(dps),
                num(get(r, "latency_ms", "p50"), "{:.2f}"), num(get(r, "latency_ms", "p99"), "{:.2f}"),
                num(get(r, "latency_ms", "p999"), "{:.2f}"), num(cpu, "{:.0f}"), num(us, "{:.1f}"),
                num(get(r, "bench_cpu", "receiver_pct"), "{:.0f}"),
                num(get(r, "bench_cpu", "publisher_pct"), "{:.0f}"),
                " ".join(num(x, "{:.2f}") for x in r.get("loadavg_before", [])),
                num(r.get("foreign_busy_pct"), "{:.0f}"),
                "yes" if r.get("ok") is True else "NO: " + str(r.get("first_error"))))
            res[r["server"]] = {"delivered_per_s": dps, "p99_ms": get(r, "latency_ms", "p99"),
                                "cpu_us_per_delivery": us, "ok": r.get("ok")}
        key = "cpu_us_per_delivery"
        note = "server CPU per delivery (lower is better)"
    h = get(res, "herald", key)
    ratios = {"herald_over_nchan": ratio(h, get(res, "nchan", key)),
              "herald_over_ceiling": ratio(h, get(res, "ceiling", key))}
    md.append("")
    md.append("Herald/Nchan {}x, Herald/ceiling {}x in {}.".format(
        num(ratios["herald_over_nchan"], "{:.2f}"), num(ratios["herald_over_ceiling"], "{:.2f}"), note))
    summary[scen] = {"servers": res, "ratios": ratios, "ratio_of": key}


def history(out, md, summary):
    h = load(os.path.join(out, "history", "history.json"))
    if not h:
        return
    lb = get(load(os.path.join(out, "history-load.json")) or {}, "loadavg_before")
    runs = {r.get("name"): r for r in h.get("runs", [])}
    paths = {"sql": "SQL `herald_publish`, one per transaction",
             "sqlbatch": "SQL `herald_publish_batch`, 100 per call",
             "rest": "REST, one per request", "restbatch": "REST `POST /v1/messages`, 100 per request"}
    pubs = [r for n, r in runs.items() if n and n.split("-")[0] in paths]
    res = [r for n, r in runs.items() if n and n.startswith("resume-")]
    if res:
        md.append("\n### S5: resume storm (Herald only)\n")
        md.append("| variant | clients | resumed | first send -> last reply ms | replayed / expected | "
                  "PostgreSQL queries | verified | other work % |")
        md.append("|---|---|---|---|---|---|---|---|")
        for r in res:
            md.append("| {} | {} | {} | {} | {} / {} | {} | {} | {} |".format(
                r["name"][7:], num(r.get("connections")), num(r.get("resumed")),
                num(r.get("storm_ms"), "{:.0f}"), num(r.get("messages_replayed")),
                num(r.get("messages_expected")), num(r.get("db_queries_delta")),
                "yes" if r.get("ok") is True else "NO", num(r.get("foreign_busy_pct"), "{:.0f}")))
        cold = runs.get("resume-cold") or res[0]
        summary["s5"] = {"storm_ms": cold.get("storm_ms"), "resumed": cold.get("resumed"),
                         "connections": cold.get("connections"),
                         "db_queries": cold.get("db_queries_delta"), "ok": cold.get("ok"),
                         "variants": {r["name"][7:]: {"storm_ms": r.get("storm_ms"),
                                                      "db_queries": r.get("db_queries_delta")}
                                      for r in res}}
    if pubs:
        md.append("\n### S6: durable publish throughput (Herald only; PostgreSQL fsync on)\n")
        md.append("| path | publishers | publishes/s | p50 ms | p99 ms | errors | seq check | "
                  "other work % |")
        md.append("|---|---|---|---|---|---|---|---|")
        pubs.sort(key=lambda r: (r["name"].split("-")[0], int(r["name"].split("-")[1])))
        for r in pubs:
            mode, n = r["name"].split("-")
            md.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
                paths[mode], n, num(r.get("publishes_per_s")),
                num(get(r, "publish_ms", "p50"), "{:.2f}"), num(get(r, "publish_ms", "p99"), "{:.2f}"),
                num(r.get("errors_total")), r.get("db_check"), num(r.get("foreign_busy_pct"), "{:.0f}")))
        summary["s6"] = {r["name"]: r.get("publishes_per_s") for r in pubs}
    if lb:
        md.append(f"\nLoad average (1/5/15 min) before S5/S6: {' '.join(num(x, '{:.2f}') for x in lb)}.")
        summary["history_loadavg_before"] = lb


def targets(summary, md):
    rows = []

    def add(name, value, ok, text):
        rows.append({"target": name, "measured": value, "met": ok})
        md.append(f"| {name} | {text} | {'met' if ok else ('MISSED' if ok is False else 'not measured')} |")

    md.append("\n### Targets\n")
    md.append("| target | measured | |")
    md.append("|---|---|---|")
    for scen in ("s1", "s2"):
        s = summary.get(scen)
        if not s:
            continue
        hc = s["ratios"]["herald_over_ceiling"]
        hn = s["ratios"]["herald_over_nchan"]
        w = s["p99_herald_over_ceiling_worst"]
        add(f"{scen.upper()} Herald >= 0.8x ceiling", hc, None if hc is None else hc >= 0.8,
            num(hc, "{:.2f}x"))
        add(f"{scen.upper()} Herald >= 3x Nchan", hn, None if hn is None else hn >= 3, num(hn, "{:.2f}x"))
        add(f"{scen.upper()} p99 <= 1.5x the ceiling's at the same rate", w,
            None if w is None else w <= 1.5, "worst " + num(w, "{:.2f}x"))
    kib = get(summary, "s4", "servers", "herald", "kib_per_conn")
    if "s4" in summary:
        add("S4 <= 4.5 KiB gateway RSS per idle connection", kib, None if kib is None else kib <= 4.5,
            num(kib, "{:.2f} KiB"))
    s5 = summary.get("s5")
    if s5:
        ok = s5.get("ok") is True and s5.get("resumed") == s5.get("connections")
        add("S5 all resumes live within 2 s", s5.get("storm_ms"),
            ok and (s5.get("storm_ms") or 1e9) <= 2000,
            f"{num(s5.get('resumed'))} of {num(s5.get('connections'))} in {num(s5.get('storm_ms'))} ms, "
            f"{num(s5.get('db_queries'))} queries")
    s6 = summary.get("s6")
    if s6:
        # each path on its own: a producer picks one
        for path, label in (("rest", "REST, one per request"), ("restbatch", "REST, batches of 100"),
                            ("sql", "SQL, one per transaction"), ("sqlbatch", "SQL, batches of 100")):
            vals = [v for k, v in s6.items() if k.split("-")[0] == path and v]
            best = max(vals, default=None)
            if best is not None:
                add(f"S6 >= 20,000 durable publishes/s ({label})", best, best >= 20000,
                    "best " + num(best) + "/s")
    summary["targets"] = rows


def main():
    out = sys.argv[1]
    v = load(os.path.join(out, "versions.json")) or {}
    st = v.get("settings", {})
    p99_limit = float(st.get("p99_limit_ms", 100))
    min_del = float(st.get("min_delivered", 0.95))
    runs = [r for r in (load(f) for f in sorted(glob.glob(os.path.join(out, "runs", "*.json")))) if r]
    md = ["## Side-by-side benchmark suite ({})".format(v.get("date_utc", "?")), "",
          "{}; {}; {}. Herald {}, nginx {} + libnginx-mod-nchan {}, Redis {}, lws {}, libuv {}, "
          "hiredis {}, gcc {} ({}). {}. Steps of {} s after {} s warm-up; a step holds when every "
          "message arrived verified, p99 <= {} ms and >= {:.0%} of the expected deliveries/s.{}".format(
              v.get("machine"), v.get("os"), v.get("kernel"), v.get("herald_rev"), v.get("nginx"),
              v.get("nchan"), v.get("redis"), v.get("libwebsockets"), v.get("libuv"), v.get("hiredis"),
              v.get("gcc"), v.get("build_type"), v.get("pinning"), st.get("step_seconds"),
              st.get("warmup_s"), p99_limit, min_del,
              " QUICK run: sizes reduced, numbers meaningless." if str(st.get("quick")) == "1" else "")]
    summary = {}
    stepped(runs, "s1", p99_limit, min_del, md, summary)
    stepped(runs, "s2", p99_limit, min_del, md, summary)
    single(runs, "s3", "every connection on its own channel, publishes spread over them", md, summary)
    single(runs, "s4", "subscribed idle connections, server RSS per connection", md, summary, idle=True)
    history(out, md, summary)
    targets(summary, md)
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "suite.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "suite.json"), "w") as f:
        json.dump({"versions": v, "summary": summary, "runs": runs}, f, indent=1)
    print()
    print(text, end="")
    if "--check" in sys.argv[2:]:
        bad = [r.get("name") for r in runs if r.get("ok") is not True]
        if bad or not runs:
            print("suite check: FAILED: not verified: " + (", ".join(map(str, bad)) or "no runs"))
            sys.exit(1)
        print(f"suite check: OK ({len(runs)} runs, every message verified)")


if __name__ == "__main__":
    main()
