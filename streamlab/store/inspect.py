"""`streamlab inspect`: what a run store holds, for people (text) and programs (JSON)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from streamlab.store.run_store import RunStore


def describe(path: str) -> dict[str, Any]:
    """Status, config, versions, learners (rows, checkpoints), gaps, rejects and input of a run."""
    store = RunStore.open(path)
    attrs = store.attrs
    meta = attrs.get("streamlab", {})
    learners = {}
    for name in store.learner_names():
        table = store.learner(name)
        seq = table.read("seq")
        learners[name] = {
            "rows": table.rows,
            "outputs": int(store.root[f"learners/{name}/output"].shape[1]),
            "first_seq": int(seq[0]) if len(seq) else None,
            "last_seq": int(seq[-1]) if len(seq) else None,
            "checkpoints": len(store.checkpoint_seqs(name)),
            "learner": store.root[f"learners/{name}"].attrs.get("learner", {}),
        }
    gaps = store.gaps
    rejected = store.rejected
    checkpoint = store.checkpoint
    return {
        "path": path,
        "status": store.status,
        "error": attrs.get("error"),
        "created": meta.get("created"),
        "ended": attrs.get("ended"),
        "config": meta.get("config", {}),
        "versions": meta.get("versions", {}),
        "stream": {k: v for k, v in attrs.get("stream", {}).items() if k != "meta"},
        "learners": learners,
        "gaps": {
            "count": gaps.rows,
            "missing": int(gaps.read("n_missing").sum()) if gaps.rows else 0,
            "rows": [
                {"stream": s, "first_seq": int(f), "n_missing": int(n), "reason": r}
                for s, f, n, r in zip(
                    gaps.read("stream"),
                    gaps.read("first_seq"),
                    gaps.read("n_missing"),
                    gaps.read("reason"),
                    strict=True,
                )
            ][:20],
        },
        "rejected": {
            "count": rejected.rows,
            "by_code": dict(Counter(str(c) for c in rejected.read("code"))),
        },
        "input_rows": store.input().rows if store.has_input else 0,
        "last_checkpoint_seq": checkpoint.seq if checkpoint else None,
        "resumes": attrs.get("resumes", []),
    }


def describe_text(info: dict[str, Any]) -> str:
    """A short human-readable summary of `describe`'s result."""
    lines = [
        f"store     {info['path']}",
        f"status    {info['status']}" + (f"  ({info['error']})" if info["error"] else ""),
    ]
    if info["status"] == "running":
        lines.append(
            "          (if no process is writing it, the run was killed: "
            "continue it with attach --resume)"
        )
    stream = info["stream"]
    if stream:
        lines.append(
            f"stream    {stream.get('name')}: {stream.get('n_channels')} channels, "
            f"{stream.get('kind')}, rate {stream.get('rate')} Hz"
        )
    for name, learner in info["learners"].items():
        lines.append(
            f"learner   {name} ({learner['learner'].get('class', '?')}): "
            f"{learner['rows']:,d} rows x "
            f"{learner['outputs']} outputs, seq {learner['first_seq']}..{learner['last_seq']}, "
            f"{learner['checkpoints']} checkpoints"
        )
    lines.append(
        f"gaps      {info['gaps']['count']} ({info['gaps']['missing']:,d} samples missing)"
    )
    for gap in info["gaps"]["rows"][:5]:
        lines.append(
            f"          {gap['stream']} from seq {gap['first_seq']}: "
            f"{gap['n_missing']} missing ({gap['reason']})"
        )
    by_code = ", ".join(f"{k} {v}" for k, v in sorted(info["rejected"]["by_code"].items()))
    lines.append(f"rejected  {info['rejected']['count']}" + (f" ({by_code})" if by_code else ""))
    if info["input_rows"]:
        lines.append(f"input     {info['input_rows']:,d} rows recorded")
    if info["resumes"]:
        lines.append(f"resumed   {len(info['resumes'])} time(s)")
    return "\n".join(lines)
