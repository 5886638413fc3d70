"""bench/results/RESULTS.md from the result files: tables, PNG plots, and what falls short.

    python -m bench.report [--results bench/results] [--no-plots]

Reads every `*.json` beside RESULTS.md (each written by a benchmark through
`bench.common.write_result`: its machine, sandbox settings, vendor limits and figures). Files
of the current run (`run` names, from bench/__main__.py) are reported as this run; the others
are earlier runs, shown with their date and settings (a file without a `sandbox` entry ran with
the vendors' limiters off). The goals are issue 22's; each unmet goal is said in "What falls
short" with its figure. Plots need matplotlib (requirements-bench.txt); without it the tables
are written and the plots are said to be missing.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
GOALS = {
    "full_sync_floor_ratio": 1.3,
    "night_1m_s": 60.0,
    "night_20k_s": 15.0,
    "sdk_speedup": 100.0,
    "sdk_fewer_writes": 1000.0,
    "shop_esp_calls_per_10k": 100.0,
    "engagement_crm_calls_per_100": 1.0,
    "rows_per_s_per_core": 250_000.0,
    "peak_mib": 1024.0,
}


def _crm_limiter(doc: dict) -> dict:
    """The CRM's vendor rate-limit switch a result ran with ({} when none)."""
    return ((doc.get("sandbox") or {}).get("sandbox_switches") or {}).get("crm", {}).get("rate_limit") or {}


@dataclass
class Shortfall:
    goal: str
    figure: str
    met: bool | None  # None: not measured


def load(results: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(results.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except ValueError:
            continue
    return out


def limits_on(doc: dict) -> bool:
    return bool((doc.get("sandbox") or {}).get("limits"))


def setting(doc: dict) -> str:
    sb = doc.get("sandbox")
    if not sb:
        return "limiters off (earlier run)"
    if sb.get("limits") is None:
        return "no sandbox"
    latency = sb.get("latency_ms")
    return f"limiters {'on' if sb.get('limits') else 'off'}, latency {latency} ms"


def _num(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_num(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _size(name: str) -> int | None:
    match = re.search(r"_(\d+)$", name)
    return int(match.group(1)) if match else None


def flatten(doc, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out |= flatten(v, f"{prefix}{k}.")
    elif isinstance(doc, list):
        if all(not isinstance(v, dict | list) for v in doc) and len(doc) <= 12:
            out[prefix[:-1]] = ", ".join(_num(v) for v in doc)
        else:
            for i, v in enumerate(doc):
                out |= flatten(v, f"{prefix}{i}.")
    else:
        out[prefix[:-1]] = doc
    return out


def _first(flat: dict, *patterns: str):
    for pattern in patterns:
        for key, value in flat.items():
            if re.search(pattern, key) and isinstance(value, int | float) and not isinstance(value, bool):
                return key, value
    return None, None


class Report:
    def __init__(
        self,
        docs: dict[str, dict],
        run: list[str] | None = None,
        size: int | None = None,
        failed: list[str] | None = None,
        durations: dict[str, float] | None = None,
    ) -> None:
        self.durations = durations or {}
        self.docs = docs
        self.run = set(run) if run is not None else set(docs)
        self.size = size
        self.failed = failed or []
        self.figures: list[str] = []
        self.short: list[Shortfall] = []
        self.missing_plots: str | None = None

    def current(self, prefix: str) -> dict[str, dict]:
        return {n: d for n, d in self.docs.items() if n.startswith(prefix) and n in self.run}

    def contacts(self) -> dict[int, dict]:
        return {_size(n): d for n, d in self.docs.items() if n.startswith("contacts_sync_") and _size(n)}

    # --- goals -----------------------------------------------------------------------------
    def goals(self) -> None:
        add = self.short.append
        runs = self.contacts()
        big = runs.get(1_000_000)
        here = [d for n, d in self.current("contacts_sync_").items()]
        doc = big if big and limits_on(big) else (here[0] if here else None)
        if doc and "ratio_to_floor" in doc["full_sync"]:
            ratio = doc["full_sync"]["ratio_to_floor"]
            note = "" if doc["contacts"] == 1_000_000 else f" (measured at {doc['contacts']:,}; 1M not run)"
            if "sandbox_busy_s" in doc["full_sync"]:
                note += (
                    f"; the sandbox itself was busy {doc['full_sync']['sandbox_busy_s']:,} s serving the "
                    f"calls one at a time: {doc['full_sync']['ratio_to_floor_or_sandbox_busy']}x that"
                )
            add(Shortfall(
                "1M-contact full sync within 1.3x of its floor",
                f"{doc['full_sync']['wall_s']:,} s for {doc['contacts']:,} contacts = {ratio}x its floor of "
                f"{doc['full_sync']['floor']['seconds']} s{note}",
                ratio <= GOALS["full_sync_floor_ratio"] and doc["contacts"] == 1_000_000,
            ))  # fmt: skip
        else:
            add(
                Shortfall(
                    "1M-contact full sync within 1.3x of its floor", "not measured with limiters on", None
                )
            )
        for size, goal_s in ((1_000_000, GOALS["night_1m_s"]), (20_000, GOALS["night_20k_s"])):
            d = runs.get(size)
            label = f"1%-change night of {size:,} contacts under {goal_s:.0f} s"
            if d and limits_on(d):
                wall = d["one_percent_night"]["wall_s"]
                add(Shortfall(label, f"{wall} s ({setting(d)})", wall < goal_s))
            elif d:
                wall = d["one_percent_night"]["wall_s"]
                add(
                    Shortfall(
                        label,
                        f"{wall} s, {setting(d)}, {d['machine']['date']}: not at the vendors' limits",
                        None,
                    )
                )
            else:
                add(Shortfall(label, "not measured", None))
        self._sdk_goals()
        shop = self._shop_figure()
        if shop:
            value, where = shop
            add(Shortfall("Shop: <= 100 ESP calls per 10k orders", f"{value:,.0f} ({where})", value <= 100))
        else:
            add(Shortfall("Shop: <= 100 ESP calls per 10k orders", "not measured", None))
        eng = self._engagement_figure()
        if eng:
            value, where = eng
            add(
                Shortfall(
                    "Engagement: <= 1 CRM call per 100 touched contacts", f"{value:.2f} ({where})", value <= 1
                )
            )
        else:
            add(Shortfall("Engagement: <= 1 CRM call per 100 touched contacts", "not measured", None))
        mapping = self.docs.get("mapping")
        if mapping:
            rate = mapping["rows_per_s_per_core"]
            add(Shortfall(
                "Transform + validate >= 250k rows/s per core",
                f"{rate:,} rows/s ({mapping['machine']['date']})", rate >= GOALS["rows_per_s_per_core"],
            ))  # fmt: skip
        self._memory_goal()

    def _sdk_goals(self) -> None:
        pairs = []
        for name, base in self.docs.items():
            if name.startswith("baseline_sdk_"):
                ours = self.docs.get(f"contacts_sync_{_size(name)}")
                if ours:
                    pairs.append((name in self.run, _size(name), base, ours))
        if not pairs:
            for goal in ("≥ 100x faster", "≥ 1,000x fewer write calls"):
                self.short.append(
                    Shortfall(f"Against the SDK one-at-a-time script: {goal}", "not measured", None)
                )
            return
        _, size, base, ours = sorted(pairs, key=lambda p: (p[0], p[1]))[-1]
        night = ours["one_percent_night"]
        single = base["one_at_a_time_no_diff"]
        speed = single["seconds"] / night["wall_s"]
        fewer = single["write_calls"] / max(night["esp_write_calls"], 1)
        where = f"1%-change night of {size:,}"
        self.short.append(Shortfall(
            "Against the SDK one-at-a-time script: ≥ 100x faster",
            f"{speed:,.1f}x ({single['seconds']:,} s vs {night['wall_s']} s, {where})",
            speed >= GOALS["sdk_speedup"],
        ))  # fmt: skip
        self.short.append(Shortfall(
            "Against the SDK one-at-a-time script: ≥ 1,000x fewer write calls",
            f"{fewer:,.0f}x ({single['write_calls']:,} vs {night['esp_write_calls']}, {where})",
            fewer >= GOALS["sdk_fewer_writes"],
        ))  # fmt: skip

    def _shop_figure(self):
        for name in sorted(self.docs, key=lambda n: (n not in self.run, not n.startswith("shop_load"))):
            if name.startswith(("shop_load", "daily_dags")):
                key, value = _first(
                    flatten(self.docs[name]),
                    r"summary\.esp_calls_per_10k_orders\.batch$",  # today's path, not the old per_call
                    r"runs\.batch.*esp.*calls_per_10k",
                    r"^shop\.esp_api_calls_per_10k",
                )
                if key:
                    return value, f"{name}: {key}, {setting(self.docs[name])}"
        return None

    def _engagement_figure(self):
        """CRM calls per 100 touched contacts of the write-back by id from the contacts snapshot
        (the DAG's path; bench_engagement_writeback, the by-email figure beside it), else of the
        daily DAGs' week."""
        writeback = self._engagement_writeback()
        if writeback:
            name, d = writeback
            new, old = d["with_snapshot"], d["without_snapshot"]
            return new["crm_calls_per_100_touched_contacts"], (
                f"{name}: ids from the contacts snapshot, {new['crm_calls']} CRM calls for "
                f"{new['contacts_touched']:,} touched contacts over {d['days']} days of engagement; by email "
                f"{old['crm_calls_per_100_touched_contacts']:.2f} ({old['crm_calls']} calls); {setting(d)}"
            )
        for name in sorted(self.docs, key=lambda n: (n not in self.run, not n.startswith("engagement"))):
            if name.startswith(("engagement", "daily_dags")):
                key, value = _first(flatten(self.docs[name]), r"crm_calls_per_100_touched")
                if key:
                    return value, f"{name}: {key}, {setting(self.docs[name])}"
        return None

    def _engagement_writeback(self) -> tuple[str, dict] | None:
        """The engagement write-back result to report: this run's, else the largest size's."""
        names = [n for n in self.docs if n.startswith("engagement_writeback_")]
        if not names:
            return None
        name = max(names, key=lambda n: (n in self.run, _size(n) or 0))
        return name, self.docs[name]

    def _memory_goal(self) -> None:
        peaks = {}
        for size, d in self.contacts().items():
            peaks[size] = d.get("peak_rss_mib_per_task_process")
        mapping = self.docs.get("mapping", {})
        for r in mapping.get("vectorised", []):
            peaks.setdefault(r["rows"], r.get("peak_rss_mib"))
        peaks = {k: v for k, v in peaks.items() if v}
        if not peaks:
            self.short.append(
                Shortfall("Peak memory per task < 1 GiB, flat from 100k to 1M", "not measured", None)
            )
            return
        top = max(peaks.values())
        flat = None
        if 100_000 in peaks and 1_000_000 in peaks:
            flat = peaks[1_000_000] <= 1.1 * peaks[100_000]
        figure = ", ".join(f"{s:,}: {v:,.0f} MiB" for s, v in sorted(peaks.items()))
        met = top < GOALS["peak_mib"] and (flat if flat is not None else None)
        self.short.append(Shortfall("Peak memory per task < 1 GiB, flat from 100k to 1M", figure, met))

    # --- sections --------------------------------------------------------------------------
    def header(self) -> list[str]:
        lines = ["# Benchmark results", ""]
        lines += [
            "Written by `make bench` (bench/report.py) from the JSON files beside this one: one run of "
            "every benchmark on the same generated data and sandbox settings. Figures of earlier runs (other "
            "sizes, or before the vendors' limiters were on) are marked with their date and settings.",
            "",
        ]
        current = [d for n, d in self.docs.items() if n in self.run]
        if current:
            m = current[0].get("machine", {})
            sb = next((d["sandbox"] for d in current if d.get("sandbox", {}).get("limits") is not None), {})
            lines += ["## This run", ""]
            rows = [[k, v] for k, v in m.items()]
            rows += [
                ["seed", sb.get("seed", "–")],
                ["vendor limiters", "on" if sb.get("limits") else "off (--no-limits)"],
                ["per-call latency (ms)", sb.get("latency_ms")],
                ["size (--size)", self.size],
                ["result files", ", ".join(sorted(self.run & set(self.docs)))],
            ]
            if self.durations:
                total = sum(self.durations.values())
                rows.append(
                    ["seconds per benchmark", ", ".join(f"{k} {v:,.0f}" for k, v in self.durations.items())]
                )
                rows.append(["seconds in all", f"{total:,.0f} ({total / 60:.1f} min)"])
            lines += table(["", "value"], rows)
        return lines

    def limits_section(self) -> list[str]:
        current = [d for n, d in self.docs.items() if n in self.run] + list(self.docs.values())
        doc = next((d for d in current if "vendor_limits" in d), None)  # this run's wording first
        if not doc:
            return []
        vl = doc["vendor_limits"]
        lines = ["## Vendor limits and batch sizes (bench/limits.py)", ""]
        lines += table(
            ["limit", "value", "unit", "in the sandbox", "source"],
            [[x["name"], x["value"], x["unit"], x["enforced"], x["source"]] for x in vl["limits"]],
        )
        lines += table(
            ["batch", "size", "source"], [[x["name"], x["value"], x["source"]] for x in vl["batch_sizes"]]
        )
        lines += [
            "The floor of a path: its fewest calls at each vendor's batch size, divided by what that "
            "vendor's limit allows (one latency per round of calls), the slowest vendor's seconds; the "
            "vendors are assumed to work side by side. Every ratio below is measured / floor.",
            "",
        ]
        return lines

    def shortfalls(self) -> list[str]:
        lines = ["## What falls short", ""]
        short = [s for s in self.short if s.met is False]
        unknown = [s for s in self.short if s.met is None]
        met = [s for s in self.short if s.met]
        if not short and not unknown:
            lines += ["Every goal of issue 22 is met.", ""]
        for s in short:
            lines.append(f"- **Not met: {s.goal}.** Measured: {s.figure}.")
        for s in unknown:
            lines.append(f"- **Not shown: {s.goal}.** {s.figure}.")
        for name, doc in self.docs.items():
            if name in self.run and doc.get("sandbox", {}).get("limits") is False:
                lines.append(
                    f"- **{name} ran with the vendors' limiters off** (`--no-limits`): machine-only figures."
                )
        for name in self.failed:
            lines.append(f"- **{name} failed in this run: no result** (see the `make bench` output).")
        older = [
            name
            for name, doc in sorted(self.docs.items())
            if name in self.run and "search_per_s" not in _crm_limiter(doc) and _crm_limiter(doc)
        ]
        if older:
            lines.append(
                f"- **HubSpot's daily and search limits not enforced** in {', '.join(older)} (run "
                "before the sandbox enforced them: only the burst limiter was on); the floors include both."
            )
        if met:
            lines += ["", "Met:", "", *[f"- {s.goal}: {s.figure}." for s in met]]
        return [*lines, ""]

    def contacts_section(self) -> list[str]:
        runs = self.contacts()
        if not runs:
            return []
        lines = ["## Contacts sync (crm_to_esp_contacts through Airflow)", ""]
        rows = []
        for size, d in sorted(runs.items()):
            for kind in ("full_sync", "one_percent_night"):
                r = d[kind]
                floor, idle = r.get("floor", {}), r.get("airflow_time", {}).get("no_task_running_s", "–")
                rows.append([
                    f"{size:,}", kind.replace("_", " "), r["wall_s"], idle, r["crm_calls"], r["esp_calls"],
                    floor.get("seconds"), r.get("ratio_to_floor"), r.get("ratio_to_floor_list_api"),
                    r.get("sandbox_busy_s", "–"), r.get("ratio_to_floor_or_sandbox_busy", "–"),
                    d.get("peak_rss_mib_per_task_process"), f"{setting(d)}, {d['machine']['date']}",
                ])  # fmt: skip
        lines += table(
            ["contacts", "night", "seconds", "of which no task running s", "CRM calls", "ESP calls",
             "floor s", "x floor", "x floor (list API)", "sandbox busy s", "x max(floor, sandbox busy)",
             "peak MiB/task", "settings"],
            rows,
        )  # fmt: skip
        lines += [
            "",
            "*sandbox busy s*: the seconds the sandbox spent serving the night's calls (its request "
            "log's `served_ms`, the added latency not counted). One event loop serves every vendor, "
            "so a call waits for the ones before it, where a vendor serves many at once: the "
            "sandbox's busy time is a floor of this machine, beside the vendors' floor.",
            "",
        ]
        stages = {size: d["full_sync"].get("task_seconds_by_task") for size, d in runs.items()}
        stages = {k: v for k, v in stages.items() if v}
        if stages:
            names = sorted(
                {t for v in stages.values() for t in v},
                key=lambda t: -max(v.get(t, 0) for v in stages.values()),
            )
            sizes = sorted(stages)
            lines += ["Seconds per task of the full sync (mapped tasks summed):", ""]
            lines += table(
                ["task", *[f"{s:,}" for s in sizes]], [[t, *[stages[s].get(t) for s in sizes]] for t in names]
            )
        return lines

    def baseline_section(self) -> list[str]:
        lines = []
        for name, base in sorted(self.docs.items()):
            if not name.startswith("baseline_sdk_"):
                continue
            size = _size(name)
            ours = self.docs.get(f"contacts_sync_{size}", {}).get("one_percent_night")
            if not lines:
                lines = ["## Against the official SDKs (bench/baseline_sdk.py), 1%-change night", ""]
            single, batch = base["one_at_a_time_no_diff"], base["sdk_batch_no_diff"]
            rows = [
                [
                    "SDK one at a time, no diff",
                    single["seconds"],
                    single["write_calls"],
                    single["crm_read_calls"],
                ],
                ["SDK batch calls, no diff", batch["seconds"], batch["write_calls"], batch["crm_read_calls"]],
            ]
            if ours:
                rows.append(
                    ["mailsync (Airflow DAG)", ours["wall_s"], ours["esp_write_calls"], ours["crm_calls"]]
                )
                for row in rows[:2]:
                    row += [
                        round(row[1] / ours["wall_s"], 1),
                        round(row[2] / max(ours["esp_write_calls"], 1)),
                    ]
                rows[2] += [1.0, 1]
            lines += [f"{size:,} contacts, {base['contacts_changed']:,} changed; {setting(base)}; "
                      f"SDKs {', '.join(f'{k} {v}' for k, v in base['sdks'].items())}. One-at-a-time writes "
                      f"timed on {single['sample']} members and extrapolated.", ""]  # fmt: skip
            lines += table(
                ["script", "seconds", "write calls", "CRM calls", "seconds / ours", "writes / ours"], rows
            )
        return lines

    def engagement_section(self) -> list[str]:
        writeback = self._engagement_writeback()
        if not writeback:
            return []
        d, w = writeback[1], writeback[1]["workload"]
        lines = ["## Engagement write-back to the CRM (bench/bench_engagement_writeback.py)", ""]
        lines += [
            f"{d['contacts']:,} contacts; {d['days']} days of engagement as one interval: "
            f"{w['activity_rows']:,} activity rows of {w['campaigns']} campaigns ({w['extract_esp_calls']} "
            f"ESP calls to read), {w['contacts_touched']:,} touched contacts, the same records written back "
            f"by each path; {setting(d)}, {d['machine']['date']}.",
            "",
        ]
        rows = []
        for path, label in (
            ("with_snapshot", "ids from the contacts snapshot, modified since it"),
            ("without_snapshot", "by email"),
        ):
            r = d[path]
            rows.append([
                label, r["contacts_touched"], r["crm_calls"], r["crm_reads_by_email"],
                r["crm_calls_by_kind"]["batch update"], r["esp_calls"], r["seconds"],
                r["crm_calls_per_100_touched_contacts"], r["floor"]["total_calls"], r["floor"]["seconds"],
                r["ratio_to_floor"],
            ])  # fmt: skip
        header = [
            "write-back", "touched contacts", "CRM calls", "reads (searches, batch reads)",
            "batch updates", "ESP calls", "seconds", "CRM calls / 100 touched", "floor calls", "floor s",
            "x floor",
        ]  # fmt: skip
        return lines + table(header, rows)

    def floors_section(self) -> list[str]:
        rows = []
        for name, doc in sorted(self.docs.items()):
            if name not in self.run:
                continue
            flat = flatten(doc)
            for key, value in flat.items():
                if key.endswith("ratio_to_floor") and value is not None:
                    base = key[: -len("ratio_to_floor")]
                    floor_s = flat.get(f"{base}floor.seconds")
                    calls = flat.get(f"{base}floor.total_calls")
                    rows.append([name, base.rstrip(".") or "–", value, floor_s, calls])
        if not rows:
            return []
        header = ["benchmark", "path", "measured / floor", "floor s", "floor calls"]
        return ["## Each figure against its floor (this run)", "", *table(header, rows)]

    def generic_section(self, skip: tuple[str, ...]) -> list[str]:
        lines = []
        for name, doc in sorted(self.docs.items()):
            if name.startswith(skip):
                continue
            flat = {
                k: v
                for k, v in flatten(doc).items()
                if not k.startswith(("machine.", "vendor_limits.", "sandbox."))
                and "task_instances" not in k
                and not re.search(r"\.floor\.(calls|seconds_by_vendor|latency_ms)", k)
            }
            lines += [f"### {name}", "", f"{setting(doc)}; {doc.get('machine', {}).get('date', '')}.", ""]
            rows = list(flat.items())[:60]
            lines += table(["figure", "value"], [[k, v] for k, v in rows])
            if len(flat) > 60:
                lines += [f"({len(flat) - 60} more figures in {name}.json)", ""]
        return ["## Other benchmarks", "", *lines] if lines else []

    # --- plots -----------------------------------------------------------------------------
    def plots(self, out_dir: Path) -> list[str]:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.missing_plots = "matplotlib is not installed (pip install -r requirements-bench.txt)"
            return []
        made = []
        made += self._plot_sizes(plt, out_dir)
        made += self._plot_stages(plt, out_dir)
        made += self._plot_calls(plt, out_dir)
        made += self._plot_floor(plt, out_dir)
        return made

    def _save(self, plt, fig, out_dir: Path, name: str, title: str) -> list[str]:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        return [f"![{title}]({name})"]

    def _plot_sizes(self, plt, out_dir: Path) -> list[str]:
        series: dict[str, list[tuple[int, float, float | None]]] = {}
        for size, d in self.contacts().items():
            tag = "on" if limits_on(d) else "off"
            for kind in ("full_sync", "one_percent_night"):
                series.setdefault(f"{kind.replace('_', ' ')} (limiters {tag})", []).append(
                    (size, d[kind]["wall_s"], d.get("peak_rss_mib_per_task_process"))
                )
        for r in self.docs.get("mapping", {}).get("vectorised", []):
            series.setdefault("transform + validate (no vendor)", []).append(
                (r["rows"], r["seconds"], r.get("peak_rss_mib"))
            )
        series = {k: sorted(v) for k, v in series.items() if v}
        if not series:
            return []
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        for label, points in series.items():
            left.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)
            mem = [(p[0], p[2]) for p in points if p[2]]
            if mem and "night" not in label:
                right.plot([p[0] for p in mem], [p[1] for p in mem], "o-", label=label)
        for ax, ylabel in ((left, "seconds"), (right, "peak RSS MiB per task process")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("contacts / rows")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        right.axhline(1024, color="red", linestyle="--", linewidth=1)
        left.set_title("Time against size")
        right.set_title("Memory against size (goal < 1 GiB)")
        return self._save(plt, fig, out_dir, "size_time_memory.png", "Time and memory against size")

    def _plot_stages(self, plt, out_dir: Path) -> list[str]:
        runs = {s: d for s, d in self.contacts().items() if d["full_sync"].get("task_seconds_by_task")}
        if not runs:
            return []
        size = max(s for s in runs if runs[s] is not None)
        current = [s for s, d in runs.items() if f"contacts_sync_{s}" in self.run]
        size = max(current) if current else size
        stages = runs[size]["full_sync"]["task_seconds_by_task"]
        names = sorted(stages, key=stages.get)
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(names) + 1.5))
        ax.barh(names, [stages[n] for n in names])
        ax.set_xlabel("seconds (mapped tasks summed)")
        ax.set_title(f"Full sync of {size:,} contacts: time per task ({setting(runs[size])})")
        return self._save(plt, fig, out_dir, "stages.png", "Time per stage")

    def _plot_calls(self, plt, out_dir: Path) -> list[str]:
        bars: dict[str, tuple[float, float | None]] = {}
        for name, d in self.docs.items():
            if name not in self.run:
                continue
            if name.startswith("contacts_sync_"):
                for kind in ("full_sync", "one_percent_night"):
                    r = d[kind]
                    bars[f"{kind} {d['contacts']:,}"] = (
                        r["crm_calls"] + r["esp_calls"],
                        r.get("floor", {}).get("total_calls"),
                    )
            if name.startswith("daily_dags_"):
                eng, shop = d["engagement"], d["shop"]
                calls = eng.get("crm_calls", 0) + eng.get("esp_calls", 0)
                bars["engagement week"] = (calls, eng.get("floor", {}).get("total_calls"))
                calls = shop["esp_api_calls"] + shop["shop_api_calls"]
                bars["shop week"] = (calls, shop.get("floor", {}).get("total_calls"))
            if name.startswith("engagement_writeback_"):
                for path in ("with_snapshot", "without_snapshot"):
                    r = d[path]
                    bars[f"engagement write-back {path.replace('_', ' ')}"] = (
                        r["crm_calls"] + r["esp_calls"],
                        r["floor"]["total_calls"],
                    )
            if name.startswith("baseline_sdk_"):
                for key in ("one_at_a_time_no_diff", "sdk_batch_no_diff"):
                    r = d[key]
                    bars[f"SDK {key.split('_no')[0]} night"] = (r["write_calls"] + r["crm_read_calls"], None)
        if not bars:
            return []
        names = list(bars)
        fig, ax = plt.subplots(figsize=(9, 0.35 * len(names) + 1.5))
        ys = range(len(names))
        ax.barh([y + 0.2 for y in ys], [bars[n][0] for n in names], height=0.4, label="measured")
        ax.barh([y - 0.2 for y in ys], [bars[n][1] or 0 for n in names], height=0.4, label="floor")
        ax.set_yticks(list(ys), names)
        ax.set_xscale("log")
        ax.set_xlabel("API calls (log)")
        ax.legend()
        ax.set_title("Calls per path against the floor")
        return self._save(plt, fig, out_dir, "calls.png", "Calls per path")

    def _plot_floor(self, plt, out_dir: Path) -> list[str]:
        rows = []
        for name, doc in sorted(self.docs.items()):
            if name not in self.run:
                continue
            for key, value in flatten(doc).items():
                if key.endswith("ratio_to_floor") and isinstance(value, int | float):
                    rows.append((f"{name}: {key[: -len('ratio_to_floor')].rstrip('.') or '–'}", value))
        if not rows:
            return []
        fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
        ax.barh([r[0] for r in rows], [r[1] for r in rows])
        ax.axvline(1.3, color="red", linestyle="--", linewidth=1, label="1.3x (full-sync goal)")
        ax.set_xscale("log")
        ax.set_xlabel("measured seconds / floor seconds (log)")
        ax.legend()
        ax.set_title("Each figure's ratio to its floor")
        return self._save(plt, fig, out_dir, "floor_ratios.png", "Ratios to the floor")

    # --- all -------------------------------------------------------------------------------
    def markdown(self, out_dir: Path, *, plots: bool = True) -> str:
        self.goals()
        images = self.plots(out_dir) if plots else []
        lines = self.header() + self.shortfalls() + self.limits_section()
        if images or self.missing_plots:
            lines += ["## Plots", ""] + (images or [f"No plots: {self.missing_plots}."]) + [""]
        lines += self.floors_section() + self.contacts_section() + self.baseline_section()
        lines += self.engagement_section()
        lines += self.generic_section(skip=("contacts_sync_", "baseline_sdk_", "engagement_writeback_"))
        return "\n".join(lines).rstrip() + "\n"


def build(
    results: Path = RESULTS,
    *,
    since: float | None = None,
    size: int | None = None,
    failed: list[str] | None = None,
    durations: dict[str, float] | None = None,
    plots: bool = True,
) -> Path:
    """Write results/RESULTS.md (and its PNGs) from results/*.json.

    `since`: the run's start (epoch seconds): files written after it are this run's (None: all);
    `failed`: the benchmarks of this run that failed.
    """
    run = None
    if since is not None:
        run = [p.stem for p in results.glob("*.json") if p.stat().st_mtime >= since]
    report = Report(load(results), run=run, size=size, failed=failed, durations=durations)
    out = results / "RESULTS.md"
    out.write_text(report.markdown(results, plots=plots))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args()
    print(f"wrote {build(args.results, plots=not args.no_plots)}")


if __name__ == "__main__":
    main()
