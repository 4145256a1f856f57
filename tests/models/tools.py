"""The default model (SmolLM2-135M-Instruct) set up for tool calling: its own chat template
shows neither tools nor tool calls, so tool tests serve it with
this one (`CUSTOM_CHAT_TEMPLATE`), in the format vLLM's hermes tool parser reads."""

from __future__ import annotations

#: Hermes' format (the one vLLM's hermes parser reads) in ChatML: the tools as JSON in the
#: system turn, an assistant's calls as `<tool_call>` blocks, tool results as user turns.
HERMES_TEMPLATE = r"""
{%- if tools %}
{{- '<|im_start|>system\n' }}
{{- 'You may call one or more functions to answer the user. Their signatures:\n<tools>\n' }}
{%- for tool in tools %}{{ (tool | tojson) + '\n' }}{% endfor %}
{{- '</tools>\nFor each call, answer ' }}
{{- '<tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>' }}
{{- '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'assistant' and message.tool_calls %}
{{- '<|im_start|>assistant\n' }}
{%- for call in message.tool_calls %}
{%- set arguments = call.function.arguments %}
{%- if arguments is not string %}{% set arguments = arguments | tojson %}{% endif %}
{{- '<tool_call>{"name": "' + call.function.name + '", "arguments": ' }}
{{- arguments + '}</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif message.role == 'tool' %}
{{- '<|im_start|>user\n<tool_response>' + message.content + '</tool_response><|im_end|>\n' }}
{%- else %}
{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
"""
