"""Worked solutions for arithmetic expressions: one operation at a time, in evaluation order.

reasoning-gym's arithmetic generators give the expression and the result but no worked solution,
and SFT needs a correct target text. This reduces the expression step by step with exact
fractions (Python's ``ast`` parses it and ``ast.unparse`` prints each intermediate expression with
the fewest parentheses). Hand-written because no library prints intermediate steps.

An expression whose value, or any intermediate value, is not an integer gives no solution: the
generators compute results with floor division, so such an item's gold answer would be wrong.
"""

from __future__ import annotations

import ast
from fractions import Fraction

_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b if b != 0 else None}


def _literal(node: ast.AST) -> Fraction | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant):
        value = _literal(node.operand)
        if value is None:
            return None
        return -value if isinstance(node.op, ast.USub) else value
    return None


def _node(value: Fraction) -> ast.AST:
    number = ast.Constant(abs(int(value)))
    return ast.UnaryOp(ast.USub(), number) if value < 0 else number


class _NotArithmetic(Exception):
    pass


def _reduce_once(node: ast.AST) -> tuple[ast.AST, bool]:
    """Rewrite the first reducible operation (left to right, innermost first); (new node, changed)."""
    if _literal(node) is not None:
        return node, False
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _literal(node.operand)
        if inner is not None:  # -(-3) or -(7) once the parenthesis has been reduced
            return _node(-inner if isinstance(node.op, ast.USub) else inner), True
        operand, changed = _reduce_once(node.operand)
        return ast.UnaryOp(node.op, operand), changed
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _literal(node.left), _literal(node.right)
        if left is not None and right is not None:
            value = _OPS[type(node.op)](left, right)
            if value is None or value.denominator != 1:
                raise _NotArithmetic("non-integer intermediate value")
            return _node(value), True
        new_left, changed = _reduce_once(node.left)
        if changed:
            return ast.BinOp(new_left, node.op, node.right), True
        new_right, changed = _reduce_once(node.right)
        return ast.BinOp(node.left, node.op, new_right), changed
    raise _NotArithmetic(f"unsupported syntax {type(node).__name__}")


def steps(expression: str) -> list[str] | None:
    """The expression and each intermediate form down to its value, or None when it is not an
    integer-valued arithmetic expression."""
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        return None
    out = [ast.unparse(node)]
    try:
        for _ in range(10_000):
            if _literal(node) is not None:
                break
            node, changed = _reduce_once(node)
            if not changed:
                return None
            out.append(ast.unparse(node))
        else:
            return None
    except _NotArithmetic:
        return None
    return out


def value(expression: str) -> int | None:
    """The expression's exact integer value, or None (see :func:`steps`)."""
    chain = steps(expression)
    if chain is None:
        return None
    return int(_literal(ast.parse(chain[-1], mode="eval").body))


def worked_solution(expression: str, answer_line: str) -> str | None:
    """``"3 + 4 * 2 = 3 + 8 = 11.\\nThe answer is 11."``-style target text, or None."""
    chain = steps(expression)
    if chain is None:
        return None
    if len(chain) == 1:
        return answer_line
    return f"{' = '.join(chain)}.\n{answer_line}"
