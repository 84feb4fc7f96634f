"""A saga's definition drawn as SVG, its steps coloured by their status."""

from __future__ import annotations

from html import escape

from orchestrator.diagram import stages
from orchestrator.saga.definition import SagaDefinition

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 46, 46, 18, 16
FILL = {
    "pending": "#f3f4f6",
    "sent": "#dbeafe",
    "retry_wait": "#fef3c7",
    "timed_out": "#fde68a",
    "resolving": "#fbcfe8",  # waiting on the participant to say what it did
    "succeeded": "#dcfce7",
    "failed": "#fee2e2",
    "compensating": "#ffedd5",
    "compensated": "#e0e7ff",
}


def render(definition: SagaDefinition, statuses: dict[str, str], current: str | None) -> str:
    columns = stages(definition)
    rows = max(len(members) for _, members in columns)
    width = PAD * 2 + len(columns) * BOX_W + (len(columns) - 1) * GAP_X
    height = PAD * 2 + rows * BOX_H + (rows - 1) * GAP_Y + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="saga diagram">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#6b7280"/>'
        "</marker></defs>",
    ]
    previous: list[tuple[int, int]] = []
    for col, (group, members) in enumerate(columns):
        x = PAD + col * (BOX_W + GAP_X)
        if group:
            parts.append(
                f'<rect x="{x - 6}" y="{PAD - 6}" width="{BOX_W + 12}" '
                f'height="{len(members) * (BOX_H + GAP_Y) - GAP_Y + 12}" rx="10" fill="none" '
                f'stroke="#9ca3af" stroke-dasharray="4 3"/>'
            )
        placed = []
        for row, step in enumerate(members):
            y = PAD + row * (BOX_H + GAP_Y)
            status = statuses.get(step.name, "pending")
            highlight = step.name == current
            stroke, stroke_w = ("#d97706", 3) if highlight else ("#6b7280", 1)
            rx = 2 if step.pivot else 8
            parts.append(
                f'<g class="step" data-step="{escape(step.name)}" data-status="{status}">'
                f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="{rx}" '
                f'fill="{FILL.get(status, "#fff")}" stroke="{stroke}" stroke-width="{stroke_w}"/>'
                f'<text x="{x + BOX_W / 2}" y="{y + 19}" text-anchor="middle" font-size="13" '
                f'font-weight="600">{escape(step.name)}{" ◆" if step.pivot else ""}</text>'
                f'<text x="{x + BOX_W / 2}" y="{y + 36}" text-anchor="middle" font-size="11" '
                f'fill="#374151">{escape(step.participant)} · {status}</text></g>'
            )
            for px, py in previous:
                parts.append(
                    f'<line x1="{px}" y1="{py}" x2="{x}" y2="{y + BOX_H / 2}" '
                    'stroke="#6b7280" marker-end="url(#arrow)"/>'
                )
            placed.append((x + BOX_W, y + BOX_H // 2))
        previous = placed
    parts.append(
        f'<text x="{PAD}" y="{height - 12}" font-size="11" fill="#6b7280">'
        "◆ pivot · dashed frame: parallel group · orange border: where the saga is</text>"
    )
    parts.append("</svg>")
    return "".join(parts)
