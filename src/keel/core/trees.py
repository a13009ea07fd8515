"""A trace as a tree: spans nested by parent, each with the rollups of its subtree."""

from __future__ import annotations

from dataclasses import dataclass, field

from keel.core.spans import Span


@dataclass(slots=True)
class TreeNode:
    """One span and its children, with tokens and cost summed over the subtree."""

    span: Span
    children: list[TreeNode] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: bool = False  # some span below has usage but no price
    errors: int = 0


def build_tree(spans: list[Span]) -> list[TreeNode]:
    """The roots of the trace (spans whose parent is not among `spans`), children by start.

    A span whose parent never arrived (still in flight, or dropped) becomes a root rather
    than disappearing.
    """
    nodes = {span.span_id: TreeNode(span) for span in spans}
    roots: list[TreeNode] = []
    for node in nodes.values():
        parent = nodes.get(node.span.parent_span_id or "")
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda child: (child.span.start_time, child.span.span_id))
    roots.sort(key=lambda root: (root.span.start_time, root.span.span_id))
    for root in roots:
        _roll_up(root)
    return roots


def _roll_up(root: TreeNode) -> None:
    # Iterative post-order: a 20,000-span chain must not hit the recursion limit.
    order: list[TreeNode] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    for node in reversed(order):
        span = node.span
        if span.usage is not None:
            node.input_tokens += span.usage.input_tokens
            node.output_tokens += span.usage.output_tokens
        node.cost_usd += span.cost_usd or 0.0
        node.unpriced = node.unpriced or span.unpriced
        node.errors += span.status == "error"
        for child in node.children:
            node.input_tokens += child.input_tokens
            node.output_tokens += child.output_tokens
            node.cost_usd += child.cost_usd
            node.unpriced = node.unpriced or child.unpriced
            node.errors += child.errors


def breadth_first(roots: list[TreeNode]) -> list[tuple[TreeNode, int]]:
    """Every node under `roots`, level by level (children in start order), with its depth.

    Reversed, the list is a valid bottom-up order: every node comes after its children.
    """
    order: list[tuple[TreeNode, int]] = [(root, 0) for root in roots]
    index = 0
    while index < len(order):
        node, depth = order[index]
        order.extend((child, depth + 1) for child in node.children)
        index += 1
    return order
