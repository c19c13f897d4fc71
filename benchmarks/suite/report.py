"""Writes the suite's results: results.json (everything), results.md (a
table per case, with machine, versions and settings) and results.png (each
comparison's speed-up, log scale)."""

import json
import os
import platform
from importlib import metadata
from typing import Any, Dict, List

THREAD_SETTINGS = {
    "1": "torch and Neuropods: 1 intra-op thread",
    "2": "torch and Neuropods: 1 intra-op thread",
    "3": "neuropods and the sessions at TF's defaults, then both with ops on the calling thread; "
    "signature calls run eagerly with 1 intra-op thread (set for case 4; no matter for a 4-element add)",
    "4": "1 intra-op thread on every side (eager included); 1 inter-op thread for neuropods and the session",
    "5": "not applicable (no framework)",
    "6": "not applicable (no framework)",
    "7": "framework defaults",
    "8": "1 intra-op thread per call on both sides",
    "9": "framework defaults",
    "10": "torch and Neuropods (in the worker too): 1 intra-op thread",
    "11": "not applicable (no framework)",
    "12": "torch and Neuropods (in the worker too): 1 intra-op thread",
    "13": "framework defaults",
    "14": "framework defaults",
    "15": "torch: 1 intra-op thread in both servers (neuropods --intra-op-threads 1, the MLServer runtime "
    "torch.set_num_threads(1)); the load generator: one thread",
    "16": "torch's defaults (an intra-op thread per core) in both servers; the load generator: one thread",
    "17": "ONNX Runtime's defaults on both sides (an intra-op thread per core, nodes run in sequence)",
    "18": "1 intra-op thread on both sides, nodes run in sequence, all graph optimisations",
    "19": "torch: 1 intra-op thread in each actor; Ray: this machine's cores, an actor holding one",
    "20": "torch: 1 intra-op thread in the actor and in the loop",
}

CASE_TITLES = {
    "1": "TorchScript tiny model",
    "2": "TorchScript medium model",
    "3": "TensorFlow tiny graph",
    "4": "TensorFlow medium model",
    "5": "Python-platform model",
    "6": "Serialization",
    "7": "Memory",
    "8": "Threads",
    "9": "Cold costs",
    "10": "Out-of-process execution: tiny model",
    "11": "Out-of-process execution: 100 small inputs",
    "12": "Out-of-process execution: 64 MB in and out",
    "13": "Out-of-process execution: load",
    "14": "Out-of-process execution: memory",
    "15": "Serving: neuropods serve against MLServer, 4-element add",
    "16": "Serving: dynamic batching",
    "17": "ONNX tiny model",
    "18": "ONNX medium model",
    "19": "Ray Data: two actors against one",
    "20": "Ray Data: one actor against a plain loop",
}


def machine() -> Dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {}
    for package in ("neuropods", "numpy", "torch", "tensorflow-cpu", "tensorflow", "onnxruntime", "ray"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory GiB": round(memory_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
    }


def speedup(row: Dict[str, Any]) -> float:
    """How many times Neuropods is better than the alternative (> 1: better)."""
    ratio = row["ratio"]["median"]
    return ratio if row["higher_is_better"] else 1.0 / ratio


def figure(stats: Dict[str, float], unit: str) -> str:
    digits = 0 if stats["median"] >= 100 else 2
    return f"{stats['median']:.{digits}f} ({stats['q1']:.{digits}f}-{stats['q3']:.{digits}f}) {unit}"


def write_markdown(path: str, rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> None:
    lines = [
        "# Neuropods benchmark results",
        "",
        "Written by `python benchmarks/run.py`"
        + (" in quick mode (few iterations: figures are indicative only)." if meta["quick"] else "."),
        "Each figure: median (quartiles) over rounds after a warm-up; the sides of a",
        "comparison run interleaved in one process; the ratio (Neuropods / alternative)",
        "is taken round by round. Times: lower is better; throughput: higher is better.",
        "",
        f"- Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, "
        f"{meta['machine']['memory GiB']} GiB, Linux {meta['machine']['kernel']}",
        f"- Python {meta['machine']['python']}; "
        + ", ".join(f"{k} {v}" for k, v in meta["machine"]["versions"].items()),
        f"- Rounds: {meta['rounds']}; calls per round (tiny cases): {meta['calls']}",
        f"- Date: {meta['date']}",
        "",
    ]
    for case, title in CASE_TITLES.items():
        case_rows = [r for r in rows if r["case"] == case]
        if not case_rows:
            continue
        lines += [f"## {case}. {title}", "", f"Threads: {THREAD_SETTINGS[case]}.", ""]
        lines += ["| comparison | Neuropods | alternative | ratio | target | met |", "|---|---|---|---|---|---|"]
        for r in case_rows:
            ratio = "-" if r["ratio"] is None else f"{r['ratio']['median']:.3f}"
            met = {True: "yes", False: "**no**", None: ""}[r["met"]]
            lines.append(
                f"| {r['title']} | {r['neuropods_label']}: {figure(r['neuropods'], r['unit'])} "
                f"| {r['other_label']}: {figure(r['other'], r['unit'])} | {ratio} | {r['target']} | {met} |"
            )
        extras = list(dict.fromkeys((r["title"], k, v) for r in case_rows for k, v in r["extra"].items()))
        notes = [r["note"] for r in case_rows if r["note"]]
        if extras or notes:
            lines.append("")
        for title, key, value in extras:
            lines.append(f"- {title}: {key} = {value:.3g}")
        for note in dict.fromkeys(notes):
            lines.append(f"- {note}")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write_chart(path: str, rows: List[Dict[str, Any]], quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["ratio"] is not None]
    labels = [f"{r['case']}. {r['title']}\nvs {r['other_label']}" for r in shown]
    values = [speedup(r) for r in shown]
    colors = ["tab:green" if v >= 1 else "tab:orange" for v in values]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(shown) + 1.5))
    ax.barh(range(len(shown)), values, color=colors)
    ax.set_yticks(range(len(shown)), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("Neuropods speed-up over the alternative (median; > 1: Neuropods faster)")
    ax.set_title("Neuropods vs alternatives" + (" (quick mode)" if quick else ""))
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.2f}x", va="center", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(out_dir: str, rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=1)
    write_markdown(os.path.join(out_dir, "results.md"), rows, meta)
    write_chart(os.path.join(out_dir, "results.png"), rows, meta["quick"])
