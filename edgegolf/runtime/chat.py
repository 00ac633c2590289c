"""Chat templates: the Jinja template a tokenizer ships (tokenizer_config.json's chat_template).

Rendered as transformers renders them (https://huggingface.co/docs/transformers/chat_templating):
a sandboxed Jinja environment with trim_blocks and lstrip_blocks, the variables `messages`,
`add_generation_prompt`, `bos_token` and `eos_token`, and `raise_exception`. jinja2 is the
optional 'chat' extra: the runtime needs it only when a chat template is applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgegolf.errors import InputError
from edgegolf.extras import require_extra

Messages = Sequence[Mapping[str, Any]]


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """A conversation: a list of {"role": ..., "content": ...} dicts, or a str (one user message)."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if (not isinstance(messages, Sequence) or not messages
            or not all(isinstance(m, Mapping) and isinstance(m.get("role"), str) for m in messages)):
        raise InputError(f"a chat prompt is {str(messages)[:60]!r}; accepted: a str (one user message) or a "
                         "non-empty list of {'role': ..., 'content': ...} dicts")
    return [dict(m) for m in messages]


def render_chat(template: str, messages: Any, *, bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True) -> str:
    """The prompt text of `messages` under `template` (ending with the assistant's turn opening)."""
    jinja2 = require_extra("chat", "jinja2", needed_by="applying a chat template")
    sandbox = require_extra("chat", "jinja2.sandbox", needed_by="applying a chat template")

    def raise_exception(message: str) -> None:
        raise InputError(f"the chat template refused the messages: {message}")

    env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        compiled = env.from_string(template)
        return str(compiled.render(messages=check_messages(messages), add_generation_prompt=add_generation_prompt,
                                   bos_token=bos_token, eos_token=eos_token))
    except jinja2.TemplateError as exc:
        raise InputError(f"the chat template cannot be rendered: {exc}") from None
