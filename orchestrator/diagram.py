"""A saga definition as text: a step table, a Mermaid flowchart and a Graphviz graph."""

from __future__ import annotations

from orchestrator.saga.definition import SagaDefinition, Step


def table(definition: SagaDefinition) -> str:
    lines = [
        f"saga {definition.name} version {definition.version}",
        f"  {'#':<3}{'step':<22}{'participant':<13}{'command':<22}{'compensation':<22}"
        f"{'timeout':>8}{'tries':>6}  notes",
    ]
    for i, step in enumerate(definition.steps, 1):
        notes = ", ".join(n for n in (step.group and f"group {step.group}", _kind(step)) if n)
        lines.append(
            f"  {i:<3}{step.name:<22}{step.participant:<13}{step.command:<22}"
            f"{step.compensation or '-':<22}{step.timeout_s:>7g}s{step.retry.max_attempts:>6}"
            f"  {notes}"
        )
    return "\n".join(lines)


def mermaid(definition: SagaDefinition, current: str | None = None) -> str:
    """Steps left to right, each with its compensation below it, dashed edges backwards."""
    lines = ["flowchart LR", "  start((start))", "  done((done))"]
    for group, members in stages(definition):
        if group:
            lines.append(f'  subgraph {group}["{group} (parallel)"]')
        for step in members:
            kind = f" ({_kind(step)})" if _kind(step) else ""
            label = f"{step.name}<br/><small>{step.participant}: {step.command}{kind}</small>"
            shape = f'{{{{"{label}"}}}}' if step.pivot else f'["{label}"]'
            lines.append(f"  {step.name}{shape}")
        if group:
            lines.append("  end")
    previous = ["start"]
    for _, members in stages(definition):
        lines += [f"  {p} --> {m.name}" for p in previous for m in members]
        previous = [m.name for m in members]
    lines += [f"  {p} --> done" for p in previous]
    compensable = [s for s in definition.steps if s.compensation]
    for step in compensable:
        lines.append(f'  {step.name}_undo(["{step.compensation}"])')
        lines.append(f"  {step.name} -.->|on failure| {step.name}_undo")
    for later, earlier in zip(compensable[::-1], compensable[::-1][1:], strict=False):
        lines.append(f"  {later.name}_undo -.-> {earlier.name}_undo")
    if current:
        lines.append(f"  style {current} stroke:#d97706,stroke-width:3px")
    return "\n".join(lines)


def dot(definition: SagaDefinition) -> str:
    lines = [
        f'digraph "{definition.name} v{definition.version}" {{',
        "  rankdir=LR; node [shape=box, fontname=Helvetica];",
    ]
    previous = ["start"]
    lines.append("  start [shape=circle]; done [shape=doublecircle];")
    for _, members in stages(definition):
        for step in members:
            shape = "hexagon" if step.pivot else "box"
            lines.append(f'  {step.name} [shape={shape}, label="{step.name}\\n{step.command}"];')
            lines += [f"  {p} -> {step.name};" for p in previous]
            if step.compensation:
                lines.append(f'  {step.name}_undo [style=dashed, label="{step.compensation}"];')
                lines.append(f"  {step.name} -> {step.name}_undo [style=dashed];")
        previous = [m.name for m in members]
    lines += [f"  {p} -> done;" for p in previous]
    lines.append("}")
    return "\n".join(lines)


def _kind(step: Step) -> str:
    """What compensating does with the step: nothing for a read-only one, and a pivot is
    never undone (the saga only moves forward after it)."""
    if step.pivot:
        return "pivot, never undone"
    return "read-only, nothing to undo" if step.read_only else ""


def stages(definition: SagaDefinition) -> list[tuple[str | None, list[Step]]]:
    """Consecutive steps of one group form one stage; any other step is a stage alone."""
    stages: list[tuple[str | None, list[Step]]] = []
    for step in definition.steps:
        if step.group is not None and stages and stages[-1][0] == step.group:
            stages[-1][1].append(step)
        else:
            stages.append((step.group, [step]))
    return stages
