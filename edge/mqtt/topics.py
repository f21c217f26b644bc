"""Topic names and topic filters (MQTT 5.0 section 4.7): validation and matching, pure.

A topic name is valid iff it is not empty and has no wildcard. A filter is valid iff it is not empty, `+` only
ever fills a whole level and `#` is the whole last level. Filters that start with a wildcard do not match
topics that start with `$` (those are server topics by convention).
"""

from __future__ import annotations

from dataclasses import dataclass

SHARED_PREFIX = "$share/"


def is_valid_topic_name(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic


def is_valid_topic_filter(topic_filter: str) -> bool:
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


@dataclass(frozen=True, slots=True)
class TopicFilter:
    """A validated filter, split into levels once so matching a topic costs one split of the topic."""

    text: str
    levels: tuple[str, ...]
    wildcard_first: bool

    @classmethod
    def parse(cls, topic_filter: str) -> TopicFilter:
        if not is_valid_topic_filter(topic_filter):
            raise ValueError(f"invalid topic filter {topic_filter!r}")
        levels = tuple(topic_filter.split("/"))
        return cls(topic_filter, levels, levels[0] in ("+", "#"))

    def matches(self, topic_levels: list[str], dollar: bool) -> bool:
        """Whether a topic, given as its levels and whether it starts with `$`, matches this filter."""
        if dollar and self.wildcard_first:
            return False
        n = len(topic_levels)
        for i, level in enumerate(self.levels):
            if level == "#":
                return True  # also matches the parent level: "a/#" matches "a"
            if i >= n or (level != "+" and level != topic_levels[i]):
                return False
        return len(self.levels) == n

    def matches_topic(self, topic: str) -> bool:
        return self.matches(topic.split("/"), topic.startswith("$"))
