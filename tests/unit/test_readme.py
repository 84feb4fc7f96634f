"""The harness example in the README runs as written."""

from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_harness_example_runs() -> None:
    text = README.read_text()
    block = text.split("<!-- harness-example -->", 1)[1]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    assert "SagaHarness" in code
    exec(compile(code, str(README), "exec"), {})
