"""Where a process spent its time, from a py-spy collapsed-stack file.

python -m bench.profile bench/results/profiles/worker.txt [--top 40] [--match text]
python -m bench.profile --layers bench/results/profiles/*.txt   # a table: share per layer
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def summarize(path: Path, top: int, match: str = "") -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + _where(f) + ")" for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{path.name}: {total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        lines.append(f"-- {title}")
        shown = 0
        for frame, n in counter.most_common():
            if match and match not in frame:
                continue
            lines.append(f"{100 * n / max(total, 1):6.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(lines)


# A sample counts for the layer of its innermost frame that belongs to one, in this order.
LAYERS = (
    ("database", ("sqlalchemy/", "psycopg/", "greenlet")),
    ("kafka client", ("aiokafka/",)),
    ("http", ("fastapi/", "starlette/", "uvicorn/", "httptools", "pydantic")),
    ("faust", ("faust/", "mode/")),
    ("json", ("json/", "orjson")),
    ("logging", ("logging/", "structlog/")),
    ("saga core", ("orchestrator/saga/", "statemachine/")),
    ("our code", ("orchestrator/", "participants/")),
)


def by_layer(path: Path) -> dict[str, float]:
    """Share of the samples per layer (the rest is the event loop and the interpreter)."""
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        frames = stack.split(";")
        counts[_layer(frames)] += int(count)
    return {layer: 100 * counts[layer] / max(total, 1) for layer, _ in (*LAYERS, ("other", ()))}


def _layer(frames: list[str]) -> str:
    for frame in reversed(frames):
        where = frame.partition(" (")[2]
        for layer, marks in LAYERS:
            if any(mark in where for mark in marks):
                return layer
    return "other"


def _where(frame: str) -> str:
    inside = frame.partition(" (")[2].rstrip(")")
    path, _, _line = inside.rpartition(":")
    parts = path.split("/")
    for anchor in ("site-packages", "orchestrator", "participants", "bench", "lib"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + (anchor in ("site-packages", "lib")) :])
    return "/".join(parts[-2:])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="")
    parser.add_argument("--layers", action="store_true", help="one row per file: % per layer")
    args = parser.parse_args()
    if args.layers:
        names = [layer for layer, _ in LAYERS] + ["other"]
        print(f"{'process':<12}" + "".join(f"{n:>14}" for n in names))
        for path in args.files:
            shares = by_layer(path)
            print(f"{path.stem:<12}" + "".join(f"{shares[n]:>13.1f}%" for n in names))
        return
    for path in args.files:
        print(summarize(path, args.top, args.match))


if __name__ == "__main__":
    main()
