"""The allocator setting: set once, where the C library allows it, and harmless after."""

from __future__ import annotations

import sys

import torch

from pyrovae.allocator import retain_freed_memory


def test_retain_freed_memory_is_set_once_on_glibc_and_is_idempotent():
    first = retain_freed_memory()
    assert retain_freed_memory() is first
    if sys.platform.startswith("linux"):
        import platform

        if platform.libc_ver()[0] == "glibc":
            assert first is True
    # allocation and release of large tensors still work afterwards
    for _ in range(3):
        t = torch.ones(64 * 2**20 // 4)
        assert float(t.sum()) == t.numel()
        del t
