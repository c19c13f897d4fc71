"""Leak check: runs many `infer` calls per platform (and serialize /
deserialize round trips) and reports how much the resident set grew after a
warm-up. Each platform runs in its own fresh process.

    python reliability/leaks.py [--calls 100000] [--warmup 10000]

Target: growth under 5 MB per 100,000 calls. Prints a Markdown table."""

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PLATFORMS = ["torchscript", "tensorflow", "python", "serialization"]


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def package(platform: str, work: str) -> str:
    """The benchmark suite's tiny package for `platform` (out = 2 * x)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from suite.memory import package as doubling_package

    return doubling_package(platform, work)


def child(platform: str, calls: int, warmup: int) -> dict:
    import numpy as np

    x = np.arange(64, dtype=np.float32)
    expected = 2 * x
    if platform == "serialization":
        import neuropods_native

        def step():
            out = neuropods_native.deserialize(neuropods_native.serialize({"x": x, "s": np.array(["ab", "c"])}))
            assert out["x"][5] == x[5]
    else:
        from neuropods.loader import load_neuropod

        work = tempfile.mkdtemp()
        model = load_neuropod(package(platform, work))

        def step():
            out = model.infer({"x": x})["out"]
            assert out[5] == expected[5]

    for _ in range(warmup):
        step()
    before = rss_bytes()
    for _ in range(calls):
        step()
    after = rss_bytes()
    return {"platform": platform, "calls": calls, "before MB": before / 2**20, "after MB": after / 2**20,
            "growth MB": (after - before) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=10_000)
    parser.add_argument("--child", choices=PLATFORMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.calls, args.warmup)))
        return
    print(f"| platform | calls | RSS after warm-up ({args.warmup} calls) | RSS after | growth |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for platform in PLATFORMS:
        done = subprocess.run([sys.executable, __file__, "--child", platform, "--calls", str(args.calls),
                               "--warmup", str(args.warmup)], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{platform} failed:\n{done.stderr[-3000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        worst = max(worst, r["growth MB"])
        print(f"| {platform} | {r['calls']} | {r['before MB']:.1f} MB | {r['after MB']:.1f} MB | {r['growth MB']:+.2f} MB |")
    print(f"\nlargest growth: {worst:+.2f} MB (target: under 5 MB per 100,000 calls)")


if __name__ == "__main__":
    main()
