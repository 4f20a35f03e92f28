"""The message template language: parse, validate, fill placeholders from a notification."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from service import notification
from service.notify import message
from service.notify.message import Event

MAX_TEMPLATE_CHARS = 2000

# Schema of what a placeholder may name: None is a value, a dict an object ("*": any key),
# a one-item list a list of that item.
_Schema: TypeAlias = "dict[str, _Schema] | list[_Schema] | None"
_COMPUTED: dict[str, Callable[[Event], str]] = {
    "headline": message.headline,
    "duration": message.duration,
    "status_emoji": message.status_emoji,
    "output_urls": message.output_urls,
}
# Below these keys of the notification's data a placeholder may go further.
_SHAPES: dict[str, _Schema] = {
    "outputs": [dict.fromkeys(notification.OUTPUT_KEYS)],
    "error": dict.fromkeys(notification.ERROR_KEYS),
    "metadata": {"*": None},
}
_FIELDS: dict[str, _Schema] = {
    "type": None,
    "timestamp": None,
    "data": {key: _SHAPES.get(key) for key in notification.DATA_KEYS},
    **dict.fromkeys(_COMPUTED),
}
# Metadata keys outside this alphabet cannot be named in a template (no quoting syntax yet).
_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"\[(\d+)\]")

_Path: TypeAlias = tuple[str | int, ...]


class TemplateError(ValueError):
    """The message template is not valid."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class _Placeholder:
    path: _Path


def _parse(template: str) -> tuple[list[str | _Placeholder], list[str]]:
    parts: list[str | _Placeholder] = []
    problems: list[str] = []
    if len(template) > MAX_TEMPLATE_CHARS:
        # Checked before parsing: a megabyte template stalled the loop and named every brace.
        return [], [
            f"template is {len(template)} characters long; the limit is {MAX_TEMPLATE_CHARS}"
        ]
    literal: list[str] = []
    i = 0
    while i < len(template):
        ch = template[i]
        if template.startswith(("{{", "}}"), i):
            literal.append(ch)
            i += 2
        elif ch == "}":
            problems.append(f"unmatched '}}' at position {i} (write '}}}}' for a literal brace)")
            literal.append(ch)
            i += 1
        elif ch == "{":
            end = template.find("}", i + 1)
            nested = template.find("{", i + 1)
            if end == -1 or -1 < nested < end:
                problems.append(f"unclosed '{{' at position {i} (write '{{{{' for a literal brace)")
                literal.append(ch)
                i += 1
                continue
            path, problem = _parse_path(template[i + 1 : end].strip(), i)
            if problem:
                problems.append(problem)
            else:
                parts.append("".join(literal))
                literal = []
                parts.append(_Placeholder(path))
            i = end + 1
        else:
            literal.append(ch)
            i += 1
    parts.append("".join(literal))
    return [p for p in parts if p != ""], problems


def _parse_path(text: str, position: int) -> tuple[_Path, str | None]:
    where = f"{{{text}}} at position {position}"
    if not text:
        return (), f"empty placeholder '{{}}' at position {position}"
    steps: list[str | int] = []
    i = 0
    while i < len(text):
        if text[i] == "[" and steps:
            index = _INDEX.match(text, i)
            if not index:
                return (), f"bad index in {where}: write [n] with n a whole number, like [0]"
            steps.append(int(index.group(1)))
            i = index.end()
            continue
        if steps and text[i] == ".":
            i += 1
        key = _KEY.match(text, i) if not steps or text[i - 1] == "." else None
        if not key:
            bad = repr(text[i]) if i < len(text) else "end"
            return (), f"bad placeholder {where}: unexpected {bad}; write names like data.model"
        steps.append(key.group(0))
        i = key.end()
    return tuple(steps), _check_path(tuple(steps), where)


def _check_path(path: _Path, where: str) -> str | None:
    node: _Schema = _FIELDS
    seen = ""
    for step in path:
        if isinstance(node, dict) and isinstance(step, str):
            if step not in node and "*" not in node:
                known = ", ".join(k for k in node)
                if not seen:
                    return f"unknown field {step!r} in {where} (known: {known})"
                return f"unknown field {seen}.{step} in {where} (known: {known})"
            node = node.get(step, node.get("*"))
            seen = f"{seen}.{step}" if seen else step
        elif isinstance(node, list) and isinstance(step, int):
            node = node[0]
            seen = f"{seen}[{step}]"
        elif isinstance(node, list):
            return f"{seen} is a list in {where}: index it, like {seen}[0]"
        elif isinstance(step, int):
            return f"{seen} is not a list in {where}: drop the [{step}]"
        else:
            return f"{seen} has no fields in {where}"
    if isinstance(node, dict):
        if "*" in node:
            return f"{seen} is an object in {where}: name one of its keys, like {seen}.tenant"
        return f"{seen} is an object in {where}: name one of {', '.join(node)}"
    if isinstance(node, list):
        hint = "{output_urls}" if seen == "data.outputs" else f"{seen}[0]"
        return f"{seen} is a list in {where}: use {hint}"
    return None


def validate_template(template: str) -> list[str]:
    """Every problem with a message template; an empty list when it is valid."""
    return _parse(template)[1]


def render_template(
    template: str, event: Event, *, escape: Callable[[str], str] | None = None
) -> str:
    """Fill a valid template from the event; missing values render as ''."""
    parts, problems = _parse(template)
    if problems:
        raise TemplateError(problems)
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            value = message.text(_lookup(event, part.path))
            out.append(escape(value) if escape else value)
    return "".join(out)


def _lookup(event: Event, path: _Path) -> object:
    computed = _COMPUTED.get(str(path[0]))
    if computed is not None:
        return computed(event)
    value: object = event
    for step in path:
        if isinstance(step, int) and isinstance(value, list) and step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, Mapping):
            value = value.get(step)
        else:
            return None
    return value


def message_text(event: Event, template: str | None, escape: Callable[[str], str]) -> str:
    """The rendered template, or the headline when there is none (or it renders blank)."""
    if template:
        try:
            text = render_template(template, event, escape=escape)
        except TemplateError:
            # A stored template that no longer validates must not block delivery forever.
            text = ""
        if text.strip():
            return text
    return escape(message.headline(event))
