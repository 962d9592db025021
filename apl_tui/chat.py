"""Chat prompts: a list of messages stored as one canonical JSON string.

A chat prompt lives in `prompts.text` like any other prompt, as the compact JSON of its message
list (``[{"role": "user", "content": "..."}]``). Keeping it one string keeps the prompt's
uniqueness, the queue and every SQL query unchanged; `decode_messages` recognises it by its exact
canonical prefix, which a plain prompt read from a file never starts with in practice.

The policy renders such a prompt with the model's chat template (`render_chat`, called by
`Policy.encode_prompts`); the labeling screen shows it as a conversation; exports write TRL's
conversational preference format.
This module is plain Python: no torch, no textual.

>>> text = encode_messages([{"role": "user", "content": "Hi"}])
>>> text
'[{"role": "user", "content": "Hi"}]'
>>> decode_messages(text)
[{'role': 'user', 'content': 'Hi'}]
>>> decode_messages("Once upon a time") is None
True
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
_PREFIX = '[{"role": "'
# A stand-in system message used to cut a template's system turn off (see `render_chat`).
_SYSTEM_SENTINEL = "APL-SYSTEM-SENTINEL"


class MessagesError(ValueError):
    """A message list that cannot be a prompt; the text says why in one clause."""


def validate_messages(value: object) -> list[dict[str, str]]:
    """Check a message list and return it as plain {"role", "content"} dicts.

    Rules: a non-empty list of objects with a role (system, user or assistant) and text content;
    at least one user turn; the last turn is the user's (the completion answers it); a system turn
    only first.
    """
    if not isinstance(value, list) or not value:
        raise MessagesError("messages must be a non-empty list of {role, content} objects")
    out: list[dict[str, str]] = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise MessagesError(f"message {i + 1} needs a 'role' and a 'content'")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise MessagesError(f"message {i + 1} has role {role!r} (use {', '.join(ROLES)})")
        if not isinstance(content, str) or not content.strip():
            raise MessagesError(f"message {i + 1} ({role}) has no text content")
        if role == "system" and i > 0:
            raise MessagesError(f"message {i + 1} is a system turn after the first message")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in out):
        raise MessagesError("the messages have no user turn")
    if out[-1]["role"] != "user":
        raise MessagesError(f"the last message is a {out[-1]['role']} turn, not the user's")
    return out


def encode_messages(messages: Sequence[dict[str, str]]) -> str:
    """The canonical string a chat prompt is stored as (json.dumps with default separators)."""
    return json.dumps([{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False)


def decode_messages(text: str) -> list[dict[str, str]] | None:
    """The message list of a stored chat prompt, or None for a plain prompt."""
    if not text.startswith(_PREFIX):
        return None
    try:
        value = json.loads(text)
        return validate_messages(value)
    except (json.JSONDecodeError, MessagesError):
        return None


def is_chat(text: str) -> bool:
    """True when a stored prompt is a chat prompt."""
    return decode_messages(text) is not None


def last_user_turn(text: str) -> str:
    """The text a one-line display should show: the last user turn of a chat, else the prompt."""
    messages = decode_messages(text)
    return messages[-1]["content"] if messages else text


def transcript(text: str) -> str:
    """A prompt as readable text: a chat prompt as "role: content" lines, a plain prompt unchanged.

    >>> transcript(encode_messages([{"role": "user", "content": "Hi"}]))
    'user: Hi'
    """
    messages = decode_messages(text)
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) if messages else text


def preference_record(prompt: str, chosen: str, rejected: str) -> dict[str, Any]:
    """prompt/chosen/rejected in TRL's format: conversational for a chat prompt, standard otherwise.

    >>> preference_record(encode_messages([{"role": "user", "content": "Hi"}]), "Hello", "Go away")["chosen"]
    [{'role': 'assistant', 'content': 'Hello'}]
    >>> preference_record("Once", "upon", "a")
    {'prompt': 'Once', 'chosen': 'upon', 'rejected': 'a'}
    """
    messages = decode_messages(prompt)
    if messages is None:
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    return {"prompt": messages, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def render_chat(tok: Any, messages: list[dict[str, str]], *, system_prompt: str = "") -> str:
    """Messages in `tok`'s chat template, with their own system turn, `system_prompt`, or none.

    Some templates (SmolLM2, Qwen2.5) inject a default system prompt when the first message is
    not a system one (≈ 20 tokens for SmolLM2). For an empty system prompt we render with a
    sentinel system turn and cut that turn off, keeping a leading BOS if the template has one.
    """
    if messages[0]["role"] == "system":
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if system_prompt:
        msgs = [{"role": "system", "content": system_prompt}, *messages]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    system = {"role": "system", "content": _SYSTEM_SENTINEL}
    try:
        head = tok.apply_chat_template([system], tokenize=False, add_generation_prompt=False)
        full = tok.apply_chat_template([system, *messages], tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja raises for templates without a system role (e.g. Gemma)
        logger.debug("chat template without system role (%s); rendering the messages alone", e)
        head, full = "", ""
    if head and _SYSTEM_SENTINEL in head and full.startswith(head):
        body = full[len(head):]
        # Keep a BOS that precedes the system turn's markup (Llama-3: "<bos><|start_header_id|>"),
        # not one that IS the turn marker (ChatML templates whose bos is "<|im_start|>").
        bos = tok.bos_token
        marker = body[:body.find("user")] if "user" in body else ""
        if bos and marker and head.startswith(bos + marker) and not body.startswith(bos):
            return bos + body
        return body
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
