"""Every function definition, however it is nested, is found by the statement walk
that the 3.11 tracer's marks and the ``code`` digest share (:class:`hashing.Scopes`)."""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from types import CodeType

import pytest

from pytest_cachevault import hashing
from pytest_cachevault.hashing import code_digest
from pytest_cachevault.trace import _Marker

#: A function in every kind of statement that can hold one.
NESTED = textwrap.dedent(
    '''
    """A docstring."""
    from __future__ import annotations
    import contextlib

    def top(): return 1
    async def coroutine(): return 2

    @contextlib.contextmanager
    def decorated(): yield 3

    class Outer:
        def method(self): return 4
        class Inner:
            async def deep(self): return 5
        if True:
            def in_class_if(self): return 6

    def closure():
        def inner():
            class Local:
                def method(self): return 7
            return Local
        return inner

    if sys_flag := True:
        def in_if(): return 8
    else:
        def in_else(): return 9
    for _ in range(1):
        def in_for(): return 10
    else:
        def in_for_else(): return 11
    while not sys_flag:  # not a constant: the compiler keeps the body
        def in_while(): return 12
    with contextlib.nullcontext():
        def in_with(): return 13
    try:
        def in_try(): return 14
    except ValueError:
        def in_except(): return 15
    else:
        def in_try_else(): return 16
    finally:
        def in_finally(): return 17
    match 1:
        case 1:
            def in_case(): return 18
        case _:
            def in_default_case(): return 19
    square = lambda x: [x * x for x in range(x)]
    '''
)


def _functions(code: CodeType) -> list[str]:
    """The qualified names of the function code objects under ``code``: what the 3.12
    tracer reports as functions (lambdas and comprehensions are import-time code)."""
    found = []
    for const in code.co_consts:
        if isinstance(const, CodeType):
            if const.co_flags & inspect.CO_OPTIMIZED and const.co_name[0] != "<":
                found.append(const.co_qualname if sys.version_info >= (3, 11) else const.co_name)
            found.extend(_functions(const))
    return found


def test_every_function_gets_one_mark_under_its_qualified_name():
    marker = _Marker("__cachevault__")
    tree = marker.visit(ast.parse(NESTED))
    compile(tree, "nested.py", "exec", dont_inherit=True)
    owners = [owner for owner in marker.owners if owner is not None]
    assert marker.owners.count(None) == 1  # the module's own mark
    assert len(owners) == len(set(owners)) == 21
    if sys.version_info >= (3, 11):  # co_qualname
        assert sorted(owners) == sorted(_functions(compile(NESTED, "nested.py", "exec")))
    assert {"Outer.Inner.deep", "closure.<locals>.inner.<locals>.Local.method", "in_case",
            "in_finally", "Outer.in_class_if", "in_default_case"} <= set(owners)


def _edited(value: int) -> str:
    """NESTED with the body of the function returning ``value`` edited."""
    if value == 3:
        return NESTED.replace("yield 3", "yield 103")
    return NESTED.replace(f"return {value}\n", f"return {value + 100}\n")


@pytest.mark.parametrize("value", list(range(1, 20)))
def test_the_code_digest_blanks_every_function_body(value):
    """Editing the body of any function, wherever it is, leaves the import-time code as
    it was; editing the lambda (import-time code) does not."""
    edited = _edited(value)
    assert edited != NESTED
    assert code_digest(edited.encode()) == code_digest(NESTED.encode())
    assert code_digest(NESTED.replace("x * x", "x + x").encode()) != code_digest(NESTED.encode())


def _enclosing_functions(qualname: str) -> set[str]:
    """``closure.<locals>.inner.<locals>.Local.method`` -> closure, closure.<locals>.inner."""
    parts = qualname.split(".<locals>.")
    return {".<locals>.".join(parts[:n]) for n in range(1, len(parts))}


@pytest.mark.parametrize("value", list(range(1, 20)))
def test_a_kept_function_body_counts_wherever_it_is(value):
    """Keeping a function (and the functions it is defined in, which ran to define it)
    makes its body count, and only its body: editing another function's does not."""
    edited = _edited(value)
    owner = _owner_of(value)
    keep = frozenset({owner} | _enclosing_functions(owner))
    other = NESTED.replace("return 1\n", "return 101\n") if value != 1 else (
        NESTED.replace("return 2\n", "return 102\n"))
    assert code_digest(edited.encode(), keep) != code_digest(NESTED.encode(), keep)
    assert code_digest(other.encode(), keep) == code_digest(NESTED.encode(), keep)
    assert code_digest(NESTED.encode(), keep) != hashing.digest_bytes(NESTED.encode())


def test_a_kept_function_inside_one_not_kept_makes_the_digest_whole():
    """``inner`` is defined by running ``closure``: if only ``inner`` is said to have
    run, the body that defines it would not count, so the whole source does."""
    whole = hashing.digest_bytes(NESTED.encode())
    assert code_digest(NESTED.encode(), frozenset({"closure.<locals>.inner"})) == whole
    assert code_digest(NESTED.encode(), frozenset({"closure", "closure.<locals>.inner"})) != whole


class _Bodies(hashing.Scopes):
    """qualname -> the source of the last statement of its body."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, str] = {}

    def _function(self, node):
        self.last[self.qualname(node)] = ast.unparse(node.body[-1])
        self.visit_inside(node)
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = _function


def _owner_of(value: int) -> str:
    """The function whose body ends in ``return value`` (``yield 3`` for 3)."""
    bodies = _Bodies()
    bodies.visit(ast.parse(NESTED))
    wanted = "yield 3" if value == 3 else f"return {value}"
    (owner,) = [name for name, last in bodies.last.items() if last == wanted]
    return owner
