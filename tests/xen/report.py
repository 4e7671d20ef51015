#!/usr/bin/env python3
"""Turn the test bed's serial log into its JSON report and a table.

usage: report.py SERIAL_LOG [JSON_OUT] [key=value ...]

Reads the `PPBED <what> key=value ...` lines dom0 prints, decides each
check, writes the JSON (logdirty_ok, abort_leaves_guest_running,
migrations[]) and prints a table. Exit status 0 only if every check
passed. Extra key=value arguments (timings) go into the JSON as numbers.
"""
import json
import re
import statistics
import sys

# Harvested / guest-reported dirty rate must fall in this band. Below 1
# means missed writes (a log-dirty bug); above, the guest kernel's own
# writes and the console add a few pages, not a third more.
LOGDIRTY_RATIO_MIN = 0.9
LOGDIRTY_RATIO_MAX = 1.3


def fields(text):
    out = {}
    for word in text.split():
        if "=" in word:
            k, v = word.split("=", 1)
            out[k] = int(v) if re.fullmatch(r"-?\d+", v) else v
    return out


def main():
    log_path = sys.argv[1]
    json_path = sys.argv[2] if len(sys.argv) > 2 and "=" not in sys.argv[2] else None
    extra = {k: float(v) for k, v in (a.split("=", 1) for a in sys.argv[2:] if "=" in a)}
    events = []
    with open(log_path, errors="replace") as f:
        for line in f:
            m = re.search(r"PPBED (\w+)(.*)", line)
            if m:
                events.append((m.group(1), fields(m.group(2)), m.group(0).strip()))

    report = {
        "logdirty_ok": False,
        "abort_leaves_guest_running": False,
        "migrations": [],
    }
    problems = []
    done = [f for what, f, _ in events if what == "done"]
    report["completed"] = bool(done) and done[-1].get("status") == "ok"
    if not done:
        problems.append("dom0 never finished (timeout or crash): see the serial log")
    elif not report["completed"]:
        problems.append(f"dom0 stopped early: {done[-1].get('status')}")

    for what, f, raw in events:
        if what == "toolstack":
            report["xen"] = f.get("xen")
        elif what == "guest":
            report["guest_type"] = f.get("type")
        elif what == "logdirty":
            g, h = f.get("guest_pages_per_s", 0), f.get("harvested_pages_per_s", 0)
            ratio = h / g if g else 0.0
            rounds = [int(x) for x in str(f.get("rounds", "")).split(",") if x]
            ok = f.get("ran") == 1 and g > 0 and all(rounds) and bool(rounds) and (
                LOGDIRTY_RATIO_MIN <= ratio <= LOGDIRTY_RATIO_MAX)
            report["logdirty_ok"] = ok
            report["logdirty"] = {
                "guest_pages_per_s": g,
                "harvested_pages_per_s": h,
                "ratio": round(ratio, 3),
                "rounds": rounds,
            }
            if not ok:
                problems.append(f"log-dirty counts do not match the guest: {raw}")
        elif what == "migration":
            mig = {
                "tool": f.get("tool"),
                "n": f.get("n"),
                "ok": f.get("ok") == 1 and f.get("corrupt_pages", 1) == 0
                and f.get("bytes_on_wire", 0) > 0,
                "guest_downtime_ms": f.get("guest_downtime_ms"),
                "total_ms": f.get("total_ms"),
                "bytes_on_wire": f.get("bytes_on_wire"),
                "corrupt_pages": f.get("corrupt_pages"),
            }
            report["migrations"].append(mig)
            if not mig["ok"]:
                problems.append(f"migration failed: {raw}")
        elif what == "abort":
            report["abort_leaves_guest_running"] = (
                f.get("guest_running") == 1 and f.get("corrupt_pages", 1) == 0)
            report["abort"] = f
            if not report["abort_leaves_guest_running"]:
                problems.append(f"guest not running after an aborted migration: {raw}")
    if not report["migrations"]:
        problems.append("no migration ran")

    # Side by side: per tool medians, and perfplus / xl ratios when both ran.
    by_tool = {}
    for m in report["migrations"]:
        if m["ok"]:
            by_tool.setdefault(m["tool"], []).append(m)
    summary = {}
    for tool, ms in by_tool.items():
        summary[tool] = {}
        for key in ("guest_downtime_ms", "total_ms", "bytes_on_wire"):
            vals = [m[key] for m in ms if m[key] is not None]
            if vals:
                summary[tool][key] = statistics.median(vals)
    if "xl" in summary and "perfplus" in summary:
        summary["perfplus_over_xl"] = {
            k: round(summary["perfplus"][k] / summary["xl"][k], 3)
            for k in summary["xl"]
            if k in summary["perfplus"] and summary["xl"][k]
        }
    report["median"] = summary
    report.update(extra)
    report["problems"] = problems

    print("\nXen test bed (guest %s, Xen %s)" % (report.get("guest_type"), report.get("xen")))
    if "logdirty" in report:
        ld = report["logdirty"]
        print("  log-dirty: guest writes %d pages/s, perfplus harvested %d pages/s (ratio %.3f) -> %s"
              % (ld["guest_pages_per_s"], ld["harvested_pages_per_s"], ld["ratio"],
                 "ok" if report["logdirty_ok"] else "FAIL"))
    print("  %-9s %3s %4s %12s %10s %14s %8s" % ("tool", "n", "ok", "downtime_ms", "total_ms",
                                               "bytes_on_wire", "corrupt"))
    for m in report["migrations"]:
        print("  %-9s %3s %4s %12s %10s %14s %8s" % (m["tool"], m["n"], "yes" if m["ok"] else "NO",
                                                   m["guest_downtime_ms"], m["total_ms"],
                                                   m["bytes_on_wire"], m["corrupt_pages"]))
    if "perfplus_over_xl" in summary:
        print("  perfplus / xl (medians): %s" % summary["perfplus_over_xl"])
    print("  aborted migration leaves the guest running: %s"
          % ("yes" if report["abort_leaves_guest_running"] else "NO"))
    for p in problems:
        print("  PROBLEM: " + p)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    ok = report["completed"] and report["logdirty_ok"] and report["abort_leaves_guest_running"] \
        and not problems
    print("  RESULT: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
