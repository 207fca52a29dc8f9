"""The story title shown on the board, read from an untrusted story.yaml in about 0.05 ms.

Owns: one cosmetic field. The bounded YAML reader (`harness.config.yamlio`) is pure Python and
takes ~2 ms for a story, most of a bundle's reading time; 10,000 bundles would spend 20 s on
titles. So the title is taken from libyaml's event stream (PyYAML's C parser, when installed)
under the same bounds, and the bounded reader decides whenever the document is anything but
plain: an alias, an anchor, an explicit tag, a duplicate or non-text key, a number the bounded
reader calls ambiguous or would not convert, more than one document, a bound reached, or any
parse error. The result is the one `read_yaml(...).data.get("title")` gives (a test holds the two
to the same answers), except where libyaml's grammar and PyYAML's differ, which costs at most a
title. Nothing here builds Python objects from the document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness import safeio
from harness.config import yamlio

_STR = "tag:yaml.org,2002:str"
_CONVERTED = {"tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"}
_INT = "tag:yaml.org,2002:int"
_MAX_INT_DIGITS = 4000  # Python refuses to convert longer decimal strings (the reader would fail)
_PLAIN = object()  # "the bounded reader must decide"


def _plain_tag(value: str) -> str:
    """The tag the bounded reader's YAML 1.2 core resolvers give an untagged plain scalar."""
    return yamlio.plain_scalar_tag(value) or _STR  # the bounded reader's rules, not a copy


def _fast_title(text: str) -> Any:
    """The top-level `title` of a plain story document, None when it has none (or not as text),
    `_PLAIN` when the bounded reader must decide."""
    if not getattr(yaml, "__with_libyaml__", False):
        return _PLAIN
    events = chars = documents = 0
    # one frame per open collection: [is_mapping, expecting_key, keys seen]
    frames: list[list[Any]] = []
    title: Any = None
    title_next = False
    try:
        for event in yaml.parse(text, Loader=yaml.CSafeLoader):
            events += 1
            if events > yamlio.MAX_NODES * 2 + 8:
                return _PLAIN
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    return _PLAIN
                continue
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                frames.pop()
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue  # stream and document ends
            if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
                return _PLAIN
            if getattr(event, "tag", None) is not None:
                return _PLAIN
            top = frames[-1] if frames else None
            is_key = top is not None and top[0] and top[1]
            if top is not None and top[0]:
                top[1] = not top[1]
            value: Any = None
            if isinstance(event, yaml.ScalarEvent):
                chars += len(event.value)
                if chars > yamlio.MAX_SCALAR_CHARS:
                    return _PLAIN
                value = event.value
                if event.implicit[0]:  # plain style: resolved like the bounded reader does
                    tag = _plain_tag(value)
                    if tag == _INT and len(value) > _MAX_INT_DIGITS:
                        return _PLAIN
                    if tag != _STR and tag != _INT and tag not in _CONVERTED:
                        return _PLAIN  # the ambiguous-number tag: the reader refuses the file
                    if tag != _STR:
                        value = None  # not text: no title
                if is_key:
                    if event.value in top[2]:
                        return _PLAIN  # a duplicate key: the reader refuses the file
                    top[2].add(event.value)
                    title_next = len(frames) == 1 and event.value == "title"
                    continue
            else:  # a mapping or sequence starts
                if is_key:
                    return _PLAIN  # a key that is not text
                frames.append([isinstance(event, yaml.MappingStartEvent), True, set()])
                if len(frames) > yamlio.MAX_DEPTH:
                    return _PLAIN
            if title_next:
                title, title_next = value, False
    except (yaml.YAMLError, ValueError):
        return _PLAIN
    return title


def story_title(path: Path) -> Any:
    """The top-level `title` of the story.yaml at `path` (a str, or None when there is none or
    it is not text); HarnessError when the file cannot be read or is not an acceptable config."""
    text = safeio.read_text(path, max_bytes=yamlio.MAX_CONFIG_BYTES, what=str(path))
    title = _fast_title(text)
    if title is _PLAIN:
        data = yamlio.loads_yaml(text, path).data
        title = data.get("title") if isinstance(data, dict) else None
    return title if isinstance(title, str) else None
