"""Codec throughput: messages per second encoded and decoded, for the frames that dominate.

Run ``python benchmarks/protocol_bench.py`` for a table or ``--json`` for machine output.
Decode feeds one frame per ``FrameDecoder.feed`` call, as a busy socket read would.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from functools import partial

import msgspec

from tq.core.ids import TaskId
from tq.protocol import (
    ClaimedTask,
    ClaimReply,
    FrameDecoder,
    Message,
    SubmitTask,
    TaskSpec,
    encode,
)

PAYLOAD = b"x" * 100


def submit(n: int) -> SubmitTask:
    return SubmitTask(
        request_id=1,
        tasks=[TaskSpec(task_type="email.send", queue="mail", payload=PAYLOAD) for _ in range(n)],
    )


def claim_reply(n: int) -> ClaimReply:
    return ClaimReply(
        request_id=1,
        tasks=[
            ClaimedTask(
                id=TaskId(i.to_bytes(16, "big")),
                task_type="email.send",
                queue="mail",
                payload=PAYLOAD,
                priority=128,
                attempts=1,
                max_retries=3,
                timeout=30.0,
                lease_token=1000 + i,
                lease_expires_at=1_700_000_030.0,
                created_at=1_700_000_000.0,
            )
            for i in range(n)
        ],
    )


CASES: dict[str, Message] = {
    "SUBMIT_TASK x1": submit(1),
    "SUBMIT_TASK x500": submit(500),
    "CLAIM_REPLY x10": claim_reply(10),
}


def rate(fn: Callable[[], object], min_seconds: float) -> float:
    """Calls per second: best of three runs of at least ``min_seconds`` each."""
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_seconds:
            for _ in range(50):
                fn()
            n += 50
        best = max(best, n / elapsed)
    return best


def run(min_seconds: float) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    for name, msg in CASES.items():
        frame = encode(msg)
        decoder = FrameDecoder()
        assert decoder.feed(frame) == [msg]
        results.append(
            {
                "message": name,
                "frame_bytes": len(frame),
                "encode_per_s": round(rate(partial(encode, msg), min_seconds)),
                "decode_per_s": round(rate(partial(decoder.feed, frame), min_seconds)),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--seconds", type=float, default=0.3, help="minimum time per run")
    args = parser.parse_args()
    results = run(args.seconds)
    if args.json:
        env = {"python": platform.python_version(), "msgspec": msgspec.__version__}
        print(json.dumps({"benchmark": "protocol_codec", "env": env, "results": results}))
        return
    print(f"{'message':<18} {'frame bytes':>12} {'encode msg/s':>14} {'decode msg/s':>14}")
    for r in results:
        print(
            f"{r['message']!s:<18} {r['frame_bytes']:>12,} "
            f"{r['encode_per_s']:>14,} {r['decode_per_s']:>14,}"
        )


if __name__ == "__main__":
    main()
