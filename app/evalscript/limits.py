"""The limits one evalscript runs under, taken from Settings once."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EvalscriptLimits:
    """Bounds on an untrusted script: its size, its syntax tree, and V8's time and heap.

    Attributes:
        max_chars: Longest script (characters), checked before parsing.
        max_nodes: Most syntax-tree nodes.
        max_depth: Deepest nesting of the syntax tree.
        timeout_seconds: V8 wall time over one request.
        memory_mb: V8 heap of one context.
        block_pixels: Pixels per V8 call.

    """

    max_chars: int
    max_nodes: int
    max_depth: int
    timeout_seconds: float
    memory_mb: int
    block_pixels: int

    @classmethod
    def default(cls) -> "EvalscriptLimits":
        """The limits of default Settings (every default lives in Settings)."""
        from app.settings import default_settings

        return cls.from_settings(default_settings())

    @classmethod
    def from_settings(cls, settings: Any) -> "EvalscriptLimits":
        """The limits of a service's Settings (``evalscript_*``).

        Args:
            settings: An ``app.settings.Settings``.

        Returns:
            The limits.

        """
        return cls(
            max_chars=settings.evalscript_max_chars,
            max_nodes=settings.evalscript_max_nodes,
            max_depth=settings.evalscript_max_depth,
            timeout_seconds=settings.evalscript_timeout_seconds,
            memory_mb=settings.evalscript_memory_mb,
            block_pixels=settings.evalscript_block_pixels,
        )
