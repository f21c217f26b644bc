"""Records as readers see them (defined next to the frame codec that builds them)."""

from __future__ import annotations

from .frame import Record, RecordIn

__all__ = ["Record", "RecordIn"]
