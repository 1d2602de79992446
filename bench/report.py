"""What the bench measures, the issue's targets, medians, paired ratios, the markdown table and the JSON."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

BASELINE = "distribution"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    ratio_target: float | None = None  # paired ratio Soko/Distribution must be >= this
    limit: float | None = None  # Soko's own median must be <= this

    @property
    def target(self) -> str:
        if self.ratio_target is not None:
            return f"≥ {self.ratio_target:g}x"
        if self.limit is not None:
            return f"≤ {self.limit:g} {self.unit}"
        return ""


METRICS = [
    Metric("push_mono", "blob push, monolithic (POST + PUT ?digest=)", "MB/s", True, ratio_target=2.0),
    Metric("push_chunked", "blob push, chunked (16 MiB PATCHes)", "MB/s", True),
    Metric("pull", "blob pull (curl GET)", "MB/s", True, ratio_target=1.2),
    Metric("pull_first", "blob pull, first GET right after the push", "MB/s", True),
    Metric("pull_cpu", "blob pull server CPU per GB served", "s", False),
    Metric("storm32", "pull storm, 32 clients (100 MiB + small layers), aggregate", "MB/s", True, ratio_target=1.2),
    Metric("storm32_p99", "manifest GET p99 time to first byte during the 32-client storm", "ms", False,
           limit=20.0),
    Metric("storm32_cpu", "32-client storm server CPU per GB served", "s", False),
    Metric("storm128", "pull storm, 128 clients, aggregate", "MB/s", True),
    Metric("storm128_p99", "manifest GET p99 time to first byte during the 128-client storm", "ms", False,
           limit=20.0),
    Metric("get_rps", "manifest GET by tag, 64 conns (wrk)", "req/s", True, ratio_target=8.0),
    Metric("get_p99", "manifest GET p99 latency", "ms", False, limit=10.0),
    Metric("get_cpu", "manifest GET server CPU per request", "µs", False, limit=100.0),
    Metric("head_rps", "manifest HEAD by tag, 64 conns (hey)", "req/s", True, ratio_target=8.0),
    Metric("head_p99", "manifest HEAD p99 latency", "ms", False, limit=10.0),
    Metric("head_cpu", "manifest HEAD server CPU per request", "µs", False, limit=100.0),
    Metric("skopeo_push", "skopeo push, 12-layer image", "s", False),
    Metric("skopeo_pull", "skopeo pull, 12-layer image", "s", False),
    Metric("rss_peak", "peak memory (summed PSS) during the big upload", "MB", False, limit=200.0),
]
BY_KEY = {metric.key: metric for metric in METRICS}


def median(values: list[float]) -> float | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else None


def round_ratios(candidate: list[float], baseline: list[float]) -> list[float]:
    """The per-round ratios (each round measures both back to back)."""
    return [c / b for c, b in zip(candidate, baseline, strict=False)
            if c is not None and b and not math.isnan(c) and not math.isnan(b)]


def paired_ratio(candidate: list[float], baseline: list[float]) -> float | None:
    """Median of per-round ratios (each round measures both back to back)."""
    pairs = round_ratios(candidate, baseline)
    return statistics.median(pairs) if pairs else None


def status(metric: Metric, value: float | None, ratio: float | None) -> str:
    if metric.ratio_target is not None:
        return "" if ratio is None else ("pass" if ratio >= metric.ratio_target else "MISS")
    if metric.limit is not None:
        return "" if value is None else ("pass" if value <= metric.limit else "MISS")
    return ""


def summarise(values: dict[str, dict[str, list[float]]], candidates: list[str]) -> dict[str, dict[str, object]]:
    base = values.get(BASELINE, {})
    summary: dict[str, dict[str, object]] = {}
    for metric in METRICS:
        row: dict[str, object] = {"baseline": median(base.get(metric.key, []))}
        for name in candidates:
            mine = values.get(name, {}).get(metric.key, [])
            value, ratio = median(mine), paired_ratio(mine, base.get(metric.key, []))
            pairs = round_ratios(mine, base.get(metric.key, []))
            row[name] = {"median": value, "ratio": ratio, "status": status(metric, value, ratio),
                         "ratio_min": min(pairs) if pairs else None, "ratio_max": max(pairs) if pairs else None}
        summary[metric.key] = row
    return summary


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    assert isinstance(value, float | int)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown(summary: dict[str, dict[str, object]], candidates: list[str], notes: list[str]) -> str:
    head = ["test", "unit", "target", "Distribution"]
    for name in candidates:
        head += [name, "ratio", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in METRICS:
        row = summary[metric.key]
        if row["baseline"] is None and all(row[name]["median"] is None for name in candidates):  # type: ignore[index]
            continue  # (not measured in this run, e.g. --pulls)
        cells = [metric.label, metric.unit, metric.target, _fmt(row["baseline"])]
        for name in candidates:
            mine = row[name]
            assert isinstance(mine, dict)
            ratio, low, high = mine["ratio"], mine.get("ratio_min"), mine.get("ratio_max")
            shown = "n/a" if ratio is None else f"{ratio:.2f}x"
            if low is not None and high is not None and low != high:
                shown += f" ({low:.2f}-{high:.2f})"  # the rounds' spread
            cells += [_fmt(mine["median"]), shown, str(mine["status"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"


def write_json(path: Path, config: dict[str, object], values: dict[str, dict[str, list[float]]],
               summary: dict[str, dict[str, object]], notes: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "config": config,
        "metrics": [asdict(metric) for metric in METRICS],
        "values": values,
        "summary": summary,
        "notes": notes,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
