"""Private random streams for plugins, so toggling one never shifts another's randomness.

A/B runs with one technique or instrument flipped must keep the data order, the init and every
other plugin's noise bit-identical; each plugin therefore draws from its own generator seeded
from (run seed, its name) instead of torch's global stream.
"""

from __future__ import annotations

import hashlib

import torch


def technique_generator(seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator private to one technique: seeded from (run seed, technique name)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return gen
