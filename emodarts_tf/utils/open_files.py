"""The process's limit of open files, raised where a run needs more descriptors than the common soft limit.

A memory-mapped cache shard keeps a file descriptor open for as long as it is mapped, and a large corpus has more
shards than the soft limit of 1024 that many systems set; the hard limit is usually far higher, and a process may
raise its own soft limit up to it.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def raise_open_file_limit(needed: int, what: str = "") -> int:
    """Raise the soft ``RLIMIT_NOFILE`` of this process to ``needed``, at most to the hard limit (never lower it).

    Args:
        needed: descriptors the caller may hold at once, with a margin for everything else.
        what: what needs them, for the log lines.

    Returns:
        The soft limit afterwards (``needed`` where the limit is unlimited or the platform has none).
    """
    try:
        import resource
    except ImportError:  # not POSIX: no such limit to raise
        return needed
    what = what or "requested"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return needed
    if soft >= needed:
        return soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # e.g. above macOS's OPEN_MAX, or a sandbox that refuses
            log.warning("open-file limit: could not raise it from %d to %d (%s; %s); raise it (ulimit -n) if "
                        "loading fails with 'Too many open files'", soft, target, what, exc)
            return soft
        log.info("open-file limit raised from %d to %d (%s)", soft, target, what)
    if target < needed:
        log.warning("open-file limit: the hard limit %d is below the %d descriptors wanted (%s); raise it "
                    "(ulimit -Hn) if loading fails with 'Too many open files'", hard, needed, what)
    return target
