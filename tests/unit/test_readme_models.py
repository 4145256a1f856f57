"""README's model recipes (its "Models" section) are the engine tests' own requests.

Each JSON job there equals the object its engine test sends, and each OpenAI client call has
the keyword arguments of the request its engine test makes, both read from the engine test
modules (`tests/engine/local/test_models_*.py`), so a recipe cannot drift from what is proven.
Pure: the README is parsed, no engine is started.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.engine.local import test_models_embeddings as embeddings_recipes
from tests.engine.local import test_models_lora as lora_recipes
from tests.engine.local import test_models_tools as tools_recipes
from tests.engine.local import test_models_vision as vision_recipes
from vllm_worker.default_model import HUB_ID

ROOT = Path(__file__).parents[2]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
KINDS = ["Embedding models", "LoRA adapters", "Tool calling", "Reasoning models", "Vision models"]


@dataclass(frozen=True)
class Code:
    """A call argument that is not a literal, as its source text."""

    source: str


def models_section() -> str:
    text = (ROOT / "README.md").read_text()
    assert text.count("\n## Models\n") == 1, "README has no (or several) '## Models' sections"
    return text.split("\n## Models\n", 1)[1].split("\n## ", 1)[0]


def recipes() -> dict[str, list[tuple[str, str]]]:
    """Each `### ` subsection of the Models section: its code blocks as (language, code)."""
    blocks: dict[str, list[tuple[str, str]]] = {}
    for part in models_section().split("\n### ")[1:]:
        title, _, body = part.partition("\n")
        blocks[title] = [(found.group(1), found.group(2)) for found in FENCE.finditer(body)]
    return blocks


def only_block(kind: str, language: str) -> str:
    """The one code block of a subsection, which must be in `language`."""
    blocks = recipes()[kind]
    assert [found for found, _ in blocks] == [language], (kind, blocks)
    return blocks[0][1]


def literal(node: ast.expr, names: dict[str, Any]) -> Any:
    """A literal's value, with names bound earlier in the snippet to literals resolved;
    ValueError for anything else."""
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.List):
        return [literal(item, names) for item in node.elts]
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {
            literal(key, names): literal(value, names)
            for key, value in zip(node.keys, node.values, strict=True)
            if key is not None
        }
    return ast.literal_eval(node)


def call_arguments(code: str, function: str) -> dict[str, Any]:
    """The keyword arguments of the one call of `function` (dotted, as written) in `code`:
    literals as values, anything else as `Code`."""
    tree = ast.parse(code)
    names: dict[str, Any] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
            if isinstance(target, ast.Name):
                with contextlib.suppress(ValueError):  # a name bound to a non-literal
                    names[target.id] = literal(statement.value, names)
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == function
    ]
    assert len(calls) == 1, f"{len(calls)} calls of {function} in:\n{code}"
    assert not calls[0].args, "positional arguments are not checked"
    arguments: dict[str, Any] = {}
    for keyword in calls[0].keywords:
        assert keyword.arg is not None, "**arguments are not checked"
        try:
            arguments[keyword.arg] = literal(keyword.value, names)
        except ValueError:
            arguments[keyword.arg] = Code(ast.unparse(keyword.value))
    return arguments


def test_one_subsection_per_kind_each_with_one_recipe():
    blocks = recipes()
    assert list(blocks) == KINDS
    assert all(len(found) == 1 for found in blocks.values()), blocks


def test_embeddings_recipe_is_the_tests_request():
    code = only_block("Embedding models", "python")
    arguments = call_arguments(code, "client.embeddings.create")
    assert arguments == embeddings_recipes.EMBEDDINGS_REQUEST


def test_lora_recipe_is_the_tests_job():
    job = json.loads(only_block("LoRA adapters", "json"))
    assert job == lora_recipes.native_job(lora_recipes.CONFIGURED)
    assert job["model"] == "lora-c"


def test_tool_calling_recipe_is_the_tests_request():
    code = only_block("Tool calling", "python")
    arguments = call_arguments(code, "client.chat.completions.create")
    # The test asks the endpoint for the served name: the default model's hub id.
    assert arguments == {"model": HUB_ID, **tools_recipes.FORCED_CALL}


def test_reasoning_recipe_is_the_tests_request():
    code = only_block("Reasoning models", "python")
    arguments = call_arguments(code, "client.chat.completions.create")
    served_name = Code("client.models.list().data[0].id")  # as the test asks for it
    assert arguments == {"model": served_name, **tools_recipes.REASONING_REQUEST}
    # What the recipe says comes back is what the model is built to answer.
    from tests.models import reasoning

    assert f"# {reasoning.REASONING} | {reasoning.CONTENT}" in code


def test_vision_recipe_is_the_tests_job():
    job = json.loads(only_block("Vision models", "json"))
    assert job == vision_recipes.IMAGE_JOB


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ('f(a=1, b=[x], c="s")', {"a": 1, "b": [{"k": False}], "c": "s"}),
        ("f(a=g().h, b={'k': x})", {"a": Code("g().h"), "b": {"k": {"k": False}}}),
        ("f(a=y)", {"a": Code("y")}),
    ],
)
def test_call_arguments_resolves_literals_only(code, expected):
    assert call_arguments(f"x = {{'k': False}}\ny = g()\n{code}", "f") == expected
