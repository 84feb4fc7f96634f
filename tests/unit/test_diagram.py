from orchestrator import diagram
from orchestrator.sagas import order
from tests.unit.test_saga import PARALLEL, PIVOTED, READ_ONLY


def test_the_table_lists_every_step_with_its_compensation() -> None:
    text = diagram.table(order.DEFINITION)
    assert "saga order version 1" in text
    for step in order.DEFINITION.steps:
        assert step.name in text
        assert str(step.compensation) in text


def test_mermaid_draws_groups_as_subgraphs_and_compensations_in_reverse() -> None:
    chart = diagram.mermaid(PARALLEL, current="b")
    assert chart.startswith("flowchart LR")
    assert 'subgraph g["g (parallel)"]' in chart
    assert "a --> b" in chart
    assert "a --> c" in chart
    assert "d_undo -.-> c_undo" in chart
    assert "style b stroke" in chart


def test_the_pivot_is_drawn_differently_and_has_no_compensation_after_it() -> None:
    chart = diagram.mermaid(PIVOTED)
    assert 'b{{"b<br/>' in chart
    assert "c_undo" not in chart
    assert "shape=hexagon" in diagram.dot(PIVOTED)


def test_a_read_only_step_and_the_pivot_say_they_are_never_undone() -> None:
    chart = diagram.mermaid(READ_ONLY)
    table = diagram.table(READ_ONLY)
    assert "check.do (read-only, nothing to undo)" in chart
    assert "check_undo" not in chart
    assert "b.do (pivot, never undone)" in chart
    assert "read-only, nothing to undo" in table.splitlines()[3]
    assert "a_undo" in chart
