"""JSON text from callers, parsed without crashing: bounded nesting, every failure a ValueError.

The standard library raises RecursionError for deeply nested documents and a
plain ValueError (not JSONDecodeError) for integers of more than 4300 digits;
both would otherwise escape as a 500.
"""

import json

from ctfhost.limits import MAX_JSON_DEPTH


def depth(value):
    """How deeply `value` nests lists and objects (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            deepest = max(deepest, level)
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def loads(text, max_depth=MAX_JSON_DEPTH):
    """Parse JSON text; ValueError with a readable message for anything that is not acceptable JSON."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"nested more than {max_depth} levels deep") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise ValueError(str(exc)) from None
    if depth(value) > max_depth:
        raise ValueError(f"nested more than {max_depth} levels deep")
    return value
