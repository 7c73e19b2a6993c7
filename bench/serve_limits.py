"""The request limits guarantee an answer: the largest request params.yaml's serving limits allow, and one
just over them, each on a fresh process serving a bundle as the registered model does (int8 per params).

    python bench/serve_limits.py --bundle outputs/bundle --task sst2 --out reports/bench_limits.md

Rows are single texts of the task cut to its max_length (English words from a fixed list): the largest
allowed request is as many such rows as ``serving.max_request_tokens`` / ``max_rows`` / ``max_request_chars``
admit together. Reported: answer or refusal, seconds, RSS at rest (bundle loaded), peak and after.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from child import in_child, write_report  # noqa: E402

WORDS = "the a movie film was good bad great plot story actor scene very not quite long short".split()


def _rss(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def child(bundle: str, task: str, extra_rows: int) -> dict:
    """Load the bundle with params' serving section; send the largest allowed request + ``extra_rows``."""
    sys.path.insert(0, str(ROOT))
    from ptv2.config import load_config
    from ptv2.serving.bundle import Bundle, BundleError
    from ptv2.serving.requests import Limits

    s = load_config(ROOT / "params.yaml").serving
    b = Bundle(bundle, int8=s.int8, limits=Limits(**s.limits()), fallback_margin=s.int8_fallback_margin,
               int8_min_agreement=s.int8_min_agreement)
    if task not in b.specs:
        raise BundleError(f"--task {task!r}: this bundle serves {sorted(b.specs)}; pass one of them")
    L = b.specs[task]["max_length"]
    text = " ".join(WORDS[i % len(WORDS)] for i in range(L))  # >= L tokens: cut to L, counts L in the bound
    per_row_tokens = L
    n = min(s.max_rows, s.max_request_tokens // per_row_tokens, s.max_request_chars // len(text)) + extra_rows
    rows = [{"task": task, "text": text} for _ in range(n)]
    gc.collect()
    rest = _rss("VmRSS")
    t0 = time.perf_counter()
    try:
        out, status = b.predict(rows), "answered"
        assert len(out) == n
    except BundleError as e:
        status = f"refused: {e}"
    sec = time.perf_counter() - t0
    del rows
    gc.collect()
    return {"rows": n, "chars": n * len(text), "token_bound": n * per_row_tokens, "status": status,
            "seconds": round(sec, 2), "rest_mb": round(rest), "peak_mb": round(_rss("VmHWM")),
            "after_mb": round(_rss("VmRSS")), "limits": s.limits()}


def _run(bundle: str, task: str, extra_rows: int) -> dict:
    return in_child("serve_limits", "child", bundle=bundle, task=task, extra_rows=extra_rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="outputs/bundle")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--out", default="reports/bench_limits.md")
    a = ap.parse_args(argv)
    rows = [("largest allowed", _run(a.bundle, a.task, 0)), ("one row over", _run(a.bundle, a.task, 1))]
    cmd = "python bench/serve_limits.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = [f"# Request limits: the largest allowed request, and one row over ({a.task})", "",
          f"Command: `{cmd}`; limits (params.yaml serving): `{rows[0][1]['limits']}`; each request on a fresh "
          "process (2 CPU cores), the bundle loaded as the registered model serves it.", "",
          "| request | rows | characters | token bound | result | seconds | RSS at rest MB | peak MB | after MB |",
          "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        md.append(f"| {name} | {r['rows']} | {r['chars']:,} | {r['token_bound']:,} | {r['status'][:90]} | "
                  f"{r['seconds']} | {r['rest_mb']} | {r['peak_mb']} | {r['after_mb']} |")
    return write_report(a.out, md)


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        sys.exit(main())
