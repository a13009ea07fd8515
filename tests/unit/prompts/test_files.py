"""Prompt files: errors point at the file, line and field; pull writes what push reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.prompts.files import PromptFileError, dump_prompt, load_prompt_file, prompt_files

EXAMPLES = Path(__file__).parents[3] / "examples" / "prompts"

BROKEN = """\
name: rag_qa
messages:
  - role: system
    content: Be brief.
  - role: sistem
    content: "{{ query }}"
variables:
  query: {type: string}
"""


def test_a_problem_names_the_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "rag_qa.yaml"
    path.write_text(BROKEN)
    with pytest.raises(PromptFileError) as caught:
        load_prompt_file(path)
    assert (caught.value.line, caught.value.field) == (5, "messages[1].role")
    assert str(caught.value).startswith(f"{path}:5: messages[1].role: must be one of system")


def test_an_undeclared_variable_points_at_its_template(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        BROKEN.replace("role: sistem", "role: user").replace("{{ query }}", "{{ qury }}")
    )
    with pytest.raises(PromptFileError) as caught:
        load_prompt_file(path)
    assert (caught.value.line, caught.value.field) == (6, "messages[1].content")
    assert "{{ qury }}, which is not declared" in str(caught.value)


def test_yaml_syntax_errors_carry_their_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nmessages:\n  - role: user\n    content: [unclosed\n")
    with pytest.raises(PromptFileError) as caught:
        load_prompt_file(path)
    assert caught.value.line is not None and caught.value.line >= 4
    assert "not valid YAML" in str(caught.value)


def test_dumped_prompts_read_back_the_same(tmp_path: Path) -> None:
    for path in prompt_files([EXAMPLES]):
        template, _ = load_prompt_file(path)
        copy = tmp_path / path.name
        copy.write_text(dump_prompt(template))
        assert load_prompt_file(copy)[0] == template
        if template.type == "chat":
            assert "content: |" in copy.read_text()  # multi-line templates stay readable


def test_folders_are_searched_and_a_missing_path_is_an_error(tmp_path: Path) -> None:
    assert {p.name for p in prompt_files([EXAMPLES])} == {"rag_qa.yaml", "house_style.yaml"}
    with pytest.raises(PromptFileError, match="no such file"):
        prompt_files([tmp_path / "nope"])
