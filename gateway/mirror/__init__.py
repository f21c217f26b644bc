"""The upstream mirror: the log, at least once and in order per partition, to Apache Kafka (DESIGN 6).

    settings.py  the [mirror] config section            core.py      the commit protocol's cursor (sans-I/O)
    flow.py      bandwidth cap and priorities (pure)    producer.py  producer Protocol + confluent-kafka adapter
    target.py    one target's thread: runs the protocol fake.py      a scripted producer for tests
    mirror.py    start_mirror(), reload_mirror():       stats.py, metrics.py, api.py, reset.py, view.py
                 what the gateway calls                 reload.py    what a SIGHUP changes, per target (pure)

For demos: `render_mirror_section(bootstrap, topics)` makes a [mirror] section; `lag_lines(doc)` turns the JSON of
`GET /v1/mirror/status` into printable lines. Names load lazily: `edgestream config check` and the CLI stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Mirror": "mirror",
    "start_mirror": "mirror",
    "reload_mirror": "mirror",
    "config_problems": "settings",
    "render_mirror_section": "settings",
    "toml_section": "settings",
    "lag_lines": "view",
}

__all__ = ["Mirror", "config_problems", "lag_lines", "reload_mirror", "render_mirror_section", "start_mirror",
           "toml_section"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
