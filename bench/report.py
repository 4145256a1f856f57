"""The benchmark's report: a markdown file with every number and a PNG chart of the main ones."""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import CONCURRENCIES, MAX_FOREIGN

MARKDOWN = "benchmark.md"
CHART = "benchmark.png"

PATHS = {
    "raw": "raw vLLM (`AsyncLLM.generate`, delta)",
    "handler-stream": "handler, native, streaming",
    "handler-final": "handler, native, not streaming",
    "handler-openai": "handler, OpenAI chat, streaming",
    "endpoint-stream": "endpoint `/run` + `/stream`",
    "endpoint-runsync": "endpoint `/runsync`, not streaming",
    "endpoint-openai": "endpoint, OpenAI client, streaming",
    "vllm-openai": "vLLM's own OpenAI server (`vllm serve`), OpenAI client, streaming",
}
SHORT = {
    "raw": "raw",
    "handler-stream": "handler\nstream",
    "handler-final": "handler\nno stream",
    "handler-openai": "handler\nOpenAI",
    "endpoint-stream": "endpoint\n/stream",
    "endpoint-runsync": "endpoint\n/runsync",
    "endpoint-openai": "endpoint\nOpenAI",
    "vllm-openai": "vllm serve\nOpenAI",
}
STREAMING = {"raw", "handler-stream", "handler-openai", "endpoint-stream", "endpoint-openai"}
STREAMING |= {"vllm-openai"}
#: Our OpenAI route against vLLM's own server, compared side by side in `_versus_vllm`.
VS_VLLM = ("endpoint-openai", "vllm-openai")
#: The metrics a target can bound: how `row` compares with its reference row.
METRICS = {
    "tok/s": ("x {ref} tok/s", lambda row, ref: row.tok_s / ref.tok_s, "≥"),
    "TTFT p50": ("TTFT p50 - {ref}'s", lambda row, ref: 1000 * (row.ttft_p50 - ref.ttft_p50), "≤"),
    "TTFT p90": ("TTFT p90 - {ref}'s", lambda row, ref: 1000 * (row.ttft_p90 - ref.ttft_p90), "≤"),
    "worker CPU": (
        "x {ref} worker CPU/token",
        lambda row, ref: row.cpu_us["worker"] / ref.cpu_us["worker"],
        "≤",
    ),
}


@dataclasses.dataclass(frozen=True)
class Target:
    """One goal: `metric` of `path` against the same metric of `reference`, within `bound`
    (a share for tok/s and CPU, milliseconds for TTFT)."""

    path: str
    concurrency: int
    metric: str
    reference: str
    bound: float
    workload: str = "tiny"

    def check(self, rows: list[Row]) -> tuple[str, str, bool] | None:
        """(what is asked, what was measured, met), or None when a row was not measured."""
        row, ref = (
            _find(rows, self.path, self.concurrency),
            _find(rows, self.reference, self.concurrency),
        )
        if row is None or ref is None:
            return None
        label, measure, relation = METRICS[self.metric]
        value = measure(row, ref)
        what = label.format(ref=SHORT[self.reference].replace("\n", " "))
        if self.metric.startswith("TTFT"):
            return f"{what} {relation} {self.bound:g} ms", f"{value:+.1f} ms", value <= self.bound
        met = value >= self.bound if relation == "≥" else value <= self.bound
        return f"{what} {relation} {self.bound:.2f}", f"{value:.3f}", met


#: Issue 15's targets on the fast-engine workload, where the worker's own costs show.
TARGETS = [
    *[Target(p, 1, "TTFT p90", "raw", 20) for p in ("endpoint-stream", "endpoint-openai")],
    *[Target(p, 16, "tok/s", "raw", 0.80) for p in ("endpoint-stream", "endpoint-openai")],
    *[
        target
        for c in CONCURRENCIES
        for target in (
            Target("handler-openai", c, "worker CPU", "handler-stream", 1.3),
            Target("handler-openai", c, "tok/s", "handler-stream", 0.97),
            Target("handler-openai", c, "TTFT p50", "raw", 5),
            Target("endpoint-openai", c, "tok/s", "vllm-openai", 0.90),
            Target("endpoint-openai", c, "TTFT p50", "vllm-openai", 10),
        )
    ],
]
#: Non-streaming counts as "not slower" within this share of the streaming path's tokens/s,
#: the order of the round-to-round spread of raw vLLM on this machine.
NOT_SLOWER = 0.98


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclasses.dataclass
class Row:
    """One path at one concurrency, over all its rounds."""

    path: str
    concurrency: int
    tok_s: float  # median over rounds
    spread: float  # (max - min) / median of tokens/s over rounds
    ttft_p50: float  # seconds, over all requests of all rounds
    ttft_p90: float
    gap_p50: float | None  # seconds between items carrying tokens; None when one item
    gap_p90: float | None
    items: float  # items per request
    cpu_us: dict[str, float]  # CPU microseconds per output token, per process
    rss_mib: dict[str, float]  # peak resident memory, per process
    ratio: float = 1.0  # tokens/s over raw's
    ttft_delta_ms: float = 0.0  # p50 TTFT minus raw's


def summarize(results: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for concurrency in CONCURRENCIES:
        for path in PATHS:
            runs = [r for r in results if r["path"] == path and r["concurrency"] == concurrency]
            if not runs:
                continue
            rates = [r["tokens"] / r["wall_s"] for r in runs]
            ttft = [t for r in runs for t in r["ttft_s"]]
            gaps = [g for r in runs for g in r["gaps_s"]]
            tokens = sum(r["tokens"] for r in runs)
            rows.append(
                Row(
                    path=path,
                    concurrency=concurrency,
                    tok_s=statistics.median(rates),
                    spread=(max(rates) - min(rates)) / statistics.median(rates),
                    ttft_p50=statistics.median(ttft),
                    ttft_p90=_pct(ttft, 90),
                    gap_p50=statistics.median(gaps) if gaps else None,
                    gap_p90=_pct(gaps, 90) if gaps else None,
                    items=sum(r["items"] for r in runs) / sum(r["requests"] for r in runs),
                    cpu_us={
                        name: 1e6 * sum(r["cpu_s"][name] for r in runs) / tokens
                        for name in runs[0]["cpu_s"]
                    },
                    rss_mib={
                        name: max(r["peak_rss"][name] for r in runs) / 2**20
                        for name in runs[0]["peak_rss"]
                    },
                )
            )
    for row in rows:
        raw = next(r for r in rows if r.path == "raw" and r.concurrency == row.concurrency)
        row.ratio = row.tok_s / raw.tok_s
        row.ttft_delta_ms = 1000 * (row.ttft_p50 - raw.ttft_p50)
    return rows


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.1f}"


def _table(rows: list[Row]) -> list[str]:
    lines = [
        "| path | conc. | output tok/s | x raw | spread | TTFT p50 ms | TTFT p90 ms | "
        "Δ TTFT p50 ms | gap p50 ms | gap p90 ms | items/job | worker CPU µs/tok | "
        "engine CPU µs/tok | worker peak RSS MiB | engine peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {PATHS[r.path]} | {r.concurrency} | {r.tok_s:.0f} | {r.ratio:.3f} | "
            f"{100 * r.spread:.1f} % | {_ms(r.ttft_p50)} | {_ms(r.ttft_p90)} | "
            f"{r.ttft_delta_ms:+.1f} | {_ms(r.gap_p50)} | {_ms(r.gap_p90)} | {r.items:.1f} | "
            f"{r.cpu_us['worker']:.0f} | {r.cpu_us['engine']:.0f} | "
            f"{r.rss_mib['worker']:.0f} | {r.rss_mib['engine']:.0f} |"
        )
    return lines


def _endpoint_table(rows: list[Row]) -> list[str]:
    lines = [
        "| path | conc. | endpoint server CPU µs/tok | benchmark client CPU µs/tok | "
        "endpoint server peak RSS MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "endpoint" in r.cpu_us:
            lines.append(
                f"| {PATHS[r.path]} | {r.concurrency} | {r.cpu_us['endpoint']:.0f} | "
                f"{r.cpu_us['client']:.0f} | {r.rss_mib['endpoint']:.0f} |"
            )
    return lines


def _targets(summaries: dict[str, list[Row]]) -> list[str]:
    lines = ["| workload | path | conc. | target | measured | met |", "|---|---|---:|---|---|---|"]

    def add(workload: str, path: str, conc: int, target: str, measured: str, met: bool) -> None:
        mark = "yes" if met else "**no**"
        lines.append(f"| {workload} | {PATHS[path]} | {conc} | {target} | {measured} | {mark} |")

    for target in TARGETS:
        checked = target.check(summaries.get(target.workload, []))
        if checked:
            add(target.workload, target.path, target.concurrency, *checked)
    for workload, rows in summaries.items():
        for final, stream in (
            ("handler-final", "handler-stream"),
            ("endpoint-runsync", "endpoint-stream"),
        ):
            for conc in CONCURRENCIES:
                a, b = _find(rows, final, conc), _find(rows, stream, conc)
                if a and b:
                    share = a.tok_s / b.tok_s
                    add(
                        workload,
                        final,
                        conc,
                        f"not slower than streaming (≥ {NOT_SLOWER} x)",
                        f"{share:.3f} x streaming",
                        share >= NOT_SLOWER,
                    )
    return lines


def _versus_vllm(rows: list[Row]) -> list[str]:
    """Our endpoint's OpenAI route beside vLLM's own server, same client and workload."""
    ours, theirs = VS_VLLM
    lines = [
        "| conc. | endpoint tok/s | vLLM server tok/s | x vLLM server | endpoint TTFT p50 ms | "
        "vLLM server TTFT p50 ms | Δ TTFT p50 ms | Δ TTFT p90 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for conc in CONCURRENCIES:
        a, b = _find(rows, ours, conc), _find(rows, theirs, conc)
        if a and b:
            lines.append(
                f"| {conc} | {a.tok_s:.0f} | {b.tok_s:.0f} | {a.tok_s / b.tok_s:.3f} | "
                f"{_ms(a.ttft_p50)} | {_ms(b.ttft_p50)} | "
                f"{1000 * (a.ttft_p50 - b.ttft_p50):+.1f} | "
                f"{1000 * (a.ttft_p90 - b.ttft_p90):+.1f} |"
            )
    return lines


def _find(rows: list[Row], path: str, concurrency: int) -> Row | None:
    return next((r for r in rows if r.path == path and r.concurrency == concurrency), None)


def markdown(run: dict[str, Any], summaries: dict[str, list[Row]]) -> str:
    phases = [r for e in run["workloads"] for r in e["results"]]
    redone = sum(r["attempts"] > 1 for r in phases)
    lines = [
        "# Benchmark: the worker's overhead over raw vLLM",
        "",
        f"Generated by `make bench` on {time.strftime('%Y-%m-%d %H:%M %Z')} in "
        f"{run['minutes']:.0f} minutes. Every phase ran alone, one after another, on this machine:",
        "",
        "| | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in run["machine"].items()],
        f"| load before | `{run['uptime_before']}` |",
        f"| load after | `{run['uptime_after']}` |",
        f"| phases re-run because other processes used > {MAX_FOREIGN:.0%} of the CPU | "
        f"{redone} of {len(phases)} |",
        f"| CPU used by other processes, worst kept phase | "
        f"{max(r['foreign'] for r in phases):.1%} |",
        f"| CPU taken by the hypervisor (steal), worst phase | "
        f"{max(r['steal'] for r in phases):.1%} |",
        "",
        "Each request is one chat turn (chat template applied), greedy, `ignore_eos`, exactly "
        "the same number of output tokens. *conc.* requests run at once, back to back. Raw vLLM "
        "and the in-process handler share one engine, created as the worker creates it; the "
        "endpoint phases start `python -m vllm_worker.local` with its own engine.",
        "",
        "- **output tok/s**: all output tokens over the phase's wall time; with several rounds the "
        "median round, and **spread** is (max - min) / median over rounds.",
        "- **TTFT**: from sending the request to the first item with a token; not streaming, "
        "that is the whole request. **gap**: time between two items with tokens of one request "
        "(raw vLLM yields every token; the worker batches 1, 3, 9, 27, 50, ... tokens per item).",
        "- **worker CPU**: user + system CPU time per output token of the process running the "
        "worker, without its children: in-process phases, the benchmark process (vLLM's "
        "front end, handler and the benchmark's few client lines); endpoint phases, the "
        "`python -m vllm_worker` process. **engine**: vLLM's engine core child process and its "
        "model-runner child (`VLLM::Worker`), summed. Peak RSS is sampled every 50 ms; for the "
        "engine it is the sum of both processes' RSS.",
        "",
    ]
    for entry in run["workloads"]:
        workload, rows = entry["workload"], summaries[entry["workload"]["name"]]
        lines += [
            f"## {workload['title']}",
            "",
            f"{workload['max_tokens']} output tokens per request; requests per phase "
            + ", ".join(f"{n} at conc. {c}" for c, n in workload["requests"].items())
            + f"; {workload['rounds']} round(s) per phase, interleaved.",
            "",
            *_table(rows),
            "",
            "The endpoint's other processes (the CPU the HTTP hops cost outside the worker):",
            "",
            *_endpoint_table(rows),
            "",
        ]
        if any(r.path == VS_VLLM[1] for r in rows):
            lines += [
                "The endpoint's OpenAI route against vLLM's own OpenAI server, started as "
                "`vllm serve` starts it with the worker's settings (its worker CPU column above "
                "is the server process; its engine is a core and a model-runner process):",
                "",
                *_versus_vllm(rows),
                "",
            ]
    lines += ["## Targets", "", *_targets(summaries), "", "## Cold start", ""]
    lines += [
        "From spawning `python -m vllm_worker.local` to the worker's first job poll, split by "
        "the worker's log lines (`settings read in`, `engine ready in`, `ready for jobs`):",
        "",
        "| step | " + " | ".join(e["workload"]["title"] for e in run["workloads"]) + " |",
        "|---|" + "---:|" * len(run["workloads"]),
    ]
    for step in run["workloads"][0]["cold_start"]:
        values = " | ".join(f"{e['cold_start'][step]:.1f} s" for e in run["workloads"])
        lines.append(f"| {step} | {values} |")
    return "\n".join(lines) + "\n"


def chart(run: dict[str, Any], summaries: dict[str, list[Row]], path: Path) -> None:
    """Per workload: share of raw tokens/s, p50 TTFT and worker CPU per token, per path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("tokens/s, share of raw vLLM", lambda r: r.ratio),
        ("time to first token p50 (ms)", lambda r: 1000 * r.ttft_p50),
        ("worker CPU per output token (µs)", lambda r: r.cpu_us["worker"]),
    ]
    entries = run["workloads"]
    fig, axes = plt.subplots(len(entries), 3, figsize=(18, 5 * len(entries)), squeeze=False)
    for axes_row, entry in zip(axes, entries, strict=True):
        rows = summaries[entry["workload"]["name"]]
        names = [p for p in PATHS if any(r.path == p for r in rows)]
        for ax, (title, value) in zip(axes_row, panels, strict=True):
            for offset, conc in zip((-0.2, 0.2), CONCURRENCIES, strict=True):
                found = [_find(rows, name, conc) for name in names]
                xs = [i + offset for i, r in enumerate(found) if r]
                ys = [value(r) for r in found if r]
                bars = ax.bar(xs, ys, width=0.38, label=f"concurrency {conc}")
                ax.bar_label(bars, fmt="%.2f" if "share" in title else "%.0f", fontsize=8)
            ax.set_xticks(range(len(names)), [SHORT[n] for n in names], fontsize=9)
            ax.set_title(f"{entry['workload']['title']}\n{title}", fontsize=11)
            if "share" in title:
                ax.axhline(1.0, color="grey", linewidth=0.8)
                ax.set_ylim(0, 1.15)
            ax.legend(fontsize=8, loc="lower left" if "share" in title else "upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(run: dict[str, Any], out: Path) -> str:
    """Write the markdown and the chart into `out`; return the markdown."""
    summaries = {e["workload"]["name"]: summarize(e["results"]) for e in run["workloads"]}
    text = markdown(run, summaries)
    (out / MARKDOWN).write_text(text)
    chart(run, summaries, out / CHART)
    return text
