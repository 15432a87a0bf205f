"""Agent-supplied text made inert: for Mattermost (Markdown, mentions, links) and for one-line log records.

Whatever an agent puts in a host name, a check's detail or a drift path is data. In an alert it is shown as an
inline code span (no emphasis, links, images or HTML inside one), with `@` and `://` broken by an invisible word
joiner so neither a mention nor an autolink can form, cut to a length a human reads, on one line.
"""
from __future__ import annotations

import unicodedata

WORD_JOINER = "\u2060"
DETAIL_LIMIT = 160


def one_line(value: object) -> str:
    """`value` as text without line breaks or other control/format characters (each becomes a space)."""
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in str(value))


def inert(value: object, limit: int = DETAIL_LIMIT) -> str:
    """`value` as a Markdown inline code span that Mattermost shows literally and that notifies no one."""
    text = one_line(value)
    if len(text) > limit:
        text = text[:limit - 1] + "\u2026"
    text = (text.replace("`", "\u02cb")                      # a backtick would end the code span
            .replace("@", "@" + WORD_JOINER)                 # @channel, @all, @here, @someone
            .replace("://", ":" + WORD_JOINER + "//")        # autolinked URLs
            .replace("www.", "www" + WORD_JOINER + "."))
    return f"`{text}`" if text.strip() else "` `"
