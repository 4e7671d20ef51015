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

# Harvested / guest-reported dirty rate must fall in this band. The two
# rates cover windows that differ by up to a second at each end (no shared
# clock), and under a loaded host (TCG) the guest's rate swings 2x from one
# second to the next, hence the width. What it catches: missed harvests
# (far below 1), whole-bitmap or stale answers (far above). The guest
# kernel's own writes add a few per cent (measured 1.03-1.10).
LOGDIRTY_RATIO_MIN = 0.8
LOGDIRTY_RATIO_MAX = 1.35


def fields(text):
    out = {}
    for word in text.split():
        if "=" in word:
            k, v = word.split("=", 1)
            if re.fullmatch(r"-?\d+", v):
                out[k] = int(v)
            elif re.fullmatch(r"-?\d+\.\d*", v):
                out[k] = float(v)
            else:
                out[k] = v
    return out


def check_control(f):
    """Pause, cap, state and page reads on the live guest (xen_logdirty
    --check-control): which expectations failed."""
    rate = f.get("guest_pages_per_s", 0)
    failed = []
    if f.get("ran") != 1:
        failed.append("did not run")
    if f.get("paused_flag") != 1:
        failed.append("not paused while perfplus held it")
    if f.get("resumed_paused_flag") != 0:
        failed.append("still paused after resume (a pause reference leaked)")
    # Paused, only Xen's own event-channel writes may show.
    if f.get("paused_dirty_pages", 1 << 30) > max(64, rate // 50):
        failed.append("pages dirtied while paused")
    # Running again: a paused guest shows ~0; a loaded host may halve the
    # guest's rate for a second, so only a quarter of it is asked for.
    if f.get("resumed_dirty_pages", 0) < max(100, rate // 4):
        failed.append("guest did not run again after resume")
    before = f.get("cap_before", -1)
    expected = 50 if before == 0 else max(1, before // 2)
    if f.get("cap_set") != expected:
        failed.append(f"cap {f.get('cap_set')} set, {expected} expected")
    if f.get("cap_after") != before:
        failed.append("cap not restored")
    state = str(f.get("state", ""))
    if state != "pv":
        recs = dict(r.split(":") for r in state.split(",") if ":" in r)
        if not (recs.get("8") == "24" and int(recs.get("9", 0)) > 0 and int(recs.get("10", 0)) >= 8
                and "trailing" not in recs):
            failed.append(f"HVM state records {state}")
        if not (f.get("populated_pages", 0) > 0 and f.get("nonzero_pages", 0) > 0):
            failed.append("foreign reads of the populated pages")
    return {"failed": failed, **{k: v for k, v in f.items() if k not in ("guest", "ran")}}


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

    logdirty = {}
    control = {}
    for what, f, raw in events:
        if what == "toolstack":
            report["xen"] = f.get("xen")
        elif what == "guest":
            report.setdefault("guests", []).append(f.get("type"))
            if f.get("created") == 0 or f.get("running") == 0:
                problems.append(f"guest did not start: {raw}")
        elif what == "logdirty":
            g, h = f.get("guest_pages_per_s", 0), f.get("harvested_pages_per_s", 0)
            ratio = h / g if g else 0.0
            rounds = [int(x) for x in str(f.get("rounds", "")).split(",") if x]
            # No round may look like "every page" either.
            ok = f.get("ran") == 1 and g > 0 and bool(rounds) and all(rounds) and (
                LOGDIRTY_RATIO_MIN <= ratio <= LOGDIRTY_RATIO_MAX) and max(rounds) < 3 * g + 500
            logdirty[f.get("guest")] = {
                "ok": ok,
                "guest_pages_per_s": g,
                "harvested_pages_per_s": h,
                "ratio": round(ratio, 3),
                "rounds": rounds,
            }
            if not ok:
                problems.append(f"log-dirty counts do not match the guest: {raw}")
        elif what == "control":
            c = check_control(f)
            control[f.get("guest")] = c
            if c["failed"]:
                problems.append(f"backend control checks failed ({', '.join(c['failed'])}): {raw}")
        elif what == "migration":
            mig = {
                "guest": f.get("guest"),
                "tool": f.get("tool"),
                "n": f.get("n"),
                "ok": f.get("ok") == 1 and f.get("corrupt_pages", 1) == 0
                and f.get("bytes_on_wire", 0) > 0,
                "guest_downtime_ms": f.get("guest_downtime_ms"),
                "total_ms": f.get("total_ms"),
                "bytes_on_wire": f.get("bytes_on_wire"),
                "corrupt_pages": f.get("corrupt_pages"),
            }
            if f.get("tool") == "perfplus":
                # How perfplus saw it: its own downtime (source side, from the
                # suspend request to the destination's report), rounds, pages.
                mig["mode"] = f.get("mode")
                for k in ("pp_downtime_ms", "pp_total_ms", "rounds", "pages_sent", "zero_pages",
                          "delta_pages", "raw_pages", "final_pages", "setup_ms", "gfn_scan_ms",
                          "destroy_ms", "so_suspend_ms", "so_final_pass_ms", "so_state_ms",
                          "so_receiver_ms", "so_rename_ms", "so_start_ms", "so_queued_bytes",
                          "drain_before_stop_ms", "queued_bytes_after_rounds"):
                    if k in f:
                        mig[k] = f[k]
            report["migrations"].append(mig)
            if not mig["ok"]:
                problems.append(f"migration failed: {raw}")
        elif what == "abort":
            ok = f.get("guest_running") == 1 and f.get("corrupt_pages", 1) == 0
            report.setdefault("aborts", []).append({**f, "ok": ok})
            if not ok:
                problems.append(f"guest not running after an aborted migration: {raw}")
    report["logdirty"] = logdirty
    report["logdirty_ok"] = bool(logdirty) and all(v["ok"] for v in logdirty.values())
    report["control"] = control
    report["control_ok"] = bool(control) and all(not v["failed"] for v in control.values())
    if not control:
        problems.append("the backend control checks did not run")
    if not report["migrations"]:
        problems.append("no migration ran")
    aborts = report.get("aborts", [])
    report["abort_leaves_guest_running"] = bool(aborts) and all(a["ok"] for a in aborts)
    if not aborts:
        problems.append("no aborted migration was tried")
    # Three perfplus migrations in a row per guest (the bed stops a guest's
    # run at its first failure, so these are consecutive).
    want = int(extra.get("pp_migrations", 0))
    for guest in report.get("guests", []):
        got = sum(1 for m in report["migrations"] if m["guest"] == guest and m["tool"] == "perfplus"
                  and m.get("mode") == "transcoded" and m["ok"])
        if got < want:
            problems.append(f"{guest}: {got} perfplus migrations passed, {want} expected")

    # Side by side: per tool medians, and perfplus / xl ratios when both ran
    # (perfplus: the transcoded runs, to perfplus migrate-receive).
    by_tool = {}
    for m in report["migrations"]:
        if m["ok"]:
            tool = m["tool"] if m.get("mode") in (None, "transcoded") else "perfplus-stock-receiver"
            by_tool.setdefault((m["guest"], tool), []).append(m)
    summary = {}
    for (guest, tool), ms in by_tool.items():
        med = summary.setdefault(guest, {}).setdefault(tool, {})
        for key in ("guest_downtime_ms", "total_ms", "bytes_on_wire"):
            vals = [m[key] for m in ms if m[key] is not None]
            if vals:
                med[key] = statistics.median(vals)
    for guest, tools in summary.items():
        if "xl" in tools and "perfplus" in tools:
            tools["perfplus_over_xl"] = {
                k: round(tools["perfplus"][k] / tools["xl"][k], 3)
                for k in tools["xl"]
                if k in tools["perfplus"] and tools["xl"][k]
            }
    report["median"] = summary
    report.update(extra)
    report["problems"] = problems

    print("\nXen test bed (Xen %s, guests %s)" % (report.get("xen"), report.get("guests")))
    for guest, ld in logdirty.items():
        print("  %s log-dirty: guest writes %d pages/s, perfplus harvested %d pages/s (ratio %.3f) -> %s"
              % (guest, ld["guest_pages_per_s"], ld["harvested_pages_per_s"], ld["ratio"],
                 "ok" if ld["ok"] else "FAIL"))
    for guest, c in control.items():
        print("  %s pause/cap/state%s: %s" % (guest, "" if guest == "pv" else "/reads",
                                            "ok" if not c["failed"] else "FAIL: " + "; ".join(c["failed"])))
    print("  %-5s %-22s %3s %4s %12s %10s %14s %8s %7s %s" % (
        "guest", "tool", "n", "ok", "downtime_ms", "total_ms", "bytes_on_wire", "corrupt", "rounds",
        "pages zero/delta/raw"))
    for m in report["migrations"]:
        tool = m["tool"] + ("" if m.get("mode") in (None, "transcoded") else " (stock receiver)")
        pages = ("%s/%s/%s" % (m.get("zero_pages"), m.get("delta_pages"), m.get("raw_pages"))
                 if m["tool"] == "perfplus" else "")
        print("  %-5s %-22s %3s %4s %12s %10s %14s %8s %7s %s" % (
            m["guest"], tool, m["n"], "yes" if m["ok"] else "NO", m["guest_downtime_ms"],
            m["total_ms"], m["bytes_on_wire"], m["corrupt_pages"], m.get("rounds", ""), pages))
    stages = ("suspend", "final_pass", "state", "receiver", "rename", "start")
    switchovers = [m for m in report["migrations"] if m["tool"] == "perfplus" and "so_suspend_ms" in m]
    if switchovers:
        print("  perfplus switch-over, ms (source clock; state = PV: draining the pump, PVH: CPU state):")
        print("  %-5s %-22s %3s " % ("guest", "tool", "n") + " ".join("%10s" % s for s in stages)
              + " %10s %12s %10s" % ("downtime", "queued_KiB", "drain_ms"))
        for m in switchovers:
            tool = m["tool"] + ("" if m.get("mode") in (None, "transcoded") else " (stock receiver)")
            print("  %-5s %-22s %3s " % (m["guest"], tool, m["n"])
                  + " ".join("%10.0f" % float(m.get("so_%s_ms" % s) or 0) for s in stages)
                  + " %10.0f %12.0f %10.0f" % (float(m.get("pp_downtime_ms") or 0),
                                               float(m.get("so_queued_bytes") or 0) / 1024,
                                               float(m.get("drain_before_stop_ms") or 0)))
    for guest, tools in summary.items():
        if "perfplus_over_xl" in tools:
            print("  %s perfplus / xl (medians): %s" % (guest, tools["perfplus_over_xl"]))
    for a in report.get("aborts", []):
        print("  %s: destination fails (%s): guest running at the source: %s"
              % (a.get("guest"), a.get("how"), "yes" if a["ok"] else "NO"))
    for p in problems:
        print("  PROBLEM: " + p)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    ok = report["completed"] and report["logdirty_ok"] and report["control_ok"] \
        and report["abort_leaves_guest_running"] and not problems
    print("  RESULT: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
