"""GPU memory figures for A1111's /memory route, in upstream's shape."""

from __future__ import annotations


def cuda_memory() -> dict:
    """Free/used/total device memory and allocator statistics, or {"error": ...} without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return {"error": "unavailable"}
    free, total = torch.cuda.mem_get_info()
    s = torch.cuda.memory_stats()

    def pair(key: str) -> dict:
        return {"current": s.get(f"{key}.all.current", 0), "peak": s.get(f"{key}.all.peak", 0)}

    return {"system": {"free": free, "used": total - free, "total": total},
            "active": pair("active_bytes"), "allocated": pair("allocated_bytes"),
            "reserved": pair("reserved_bytes"), "inactive": pair("inactive_split_bytes"),
            "events": {"retries": s.get("num_alloc_retries", 0), "oom": s.get("num_ooms", 0)}}
