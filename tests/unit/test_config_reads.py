"""No setting pretends: each one is read by code outside ``tq.config``, or it is listed in
``tq.config.unbuilt.UNBUILT`` (refused unless at its default).

"Read" is decided on the source with ``ast``, not by a hand list. Setting ``S.F`` is read where
the attribute ``F`` is taken of an expression that denotes section ``S``:

1. ``<root>.S``, where ``<root>`` is the name ``settings``, any ``<expr>.settings``
   (``self.settings``, ``service.settings``) or a name annotated with the root model
   (``cfg: Settings``); so ``settings.broker.port`` and ``self.settings.broker.port``;
2. a name bound to such an expression in the same function or an enclosing one
   (``b = settings.broker``, ``p, b = settings.persistence, settings.broker``); bindings are
   per function, so a ``b`` of another function does not count;
3. a name annotated with the section's model (``def f(b: BrokerSettings)``).

A property of a section or of the root read by that rule (``settings.api.http_enabled``) reads
the fields its body takes from ``self``. The receiver is what ties a name to its section, so
``proc.broker.port``, ``self.port`` or a bare ``port`` never count for ``broker.port``, and
neither do ``BrokerSettings().port`` (a default, not the setting), ``getattr`` with a string
or ``model_dump`` (printing a setting, as ``tq config`` does, is not honouring it).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import BaseModel

import tq
from tq.config import BrokerSettings, Settings
from tq.config.unbuilt import UNBUILT

SRC = Path(tq.__file__).parent
REGISTRY = "tq.config.unbuilt.UNBUILT"

Key = tuple[str, str]  # (section, field); section "" for a property of the root


def _model_names(model: type[BaseModel]) -> set[str]:
    return {k.__name__ for k in model.__mro__ if issubclass(k, BaseModel) and k is not BaseModel}


def _self_reads(prop: property, sections: dict[str, frozenset[str]], of: str) -> set[Key]:
    """Settings a property's body takes from ``self``: ``self.F`` in section ``of``, or
    ``self.S.F`` in the root (``of`` == "")."""
    assert prop.fget is not None
    tree = ast.parse(textwrap.dedent(inspect.getsource(prop.fget)))
    found: set[Key] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        inner = node.value
        if of and isinstance(inner, ast.Name) and inner.id == "self":
            if node.attr in sections[of]:
                found.add((of, node.attr))
        elif (
            not of
            and isinstance(inner, ast.Attribute)
            and isinstance(inner.value, ast.Name)
            and inner.value.id == "self"
            and node.attr in sections.get(inner.attr, ())
        ):
            found.add((inner.attr, node.attr))
    return found


@dataclass(frozen=True)
class Schema:
    """What the walker needs to know of a settings model."""

    fields: dict[str, frozenset[str]]  # section -> its fields
    root_types: frozenset[str]  # class names meaning the whole tree
    section_types: dict[str, str]  # class name -> section
    derived: dict[Key, frozenset[Key]]  # property -> the settings it reads

    @classmethod
    def of(cls, root: type[BaseModel]) -> Schema:
        models: dict[str, type[BaseModel]] = {
            name: info.annotation
            for name, info in root.model_fields.items()
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
        }
        fields = {name: frozenset(model.model_fields) for name, model in models.items()}
        names = {name: _model_names(model) for name, model in models.items()}
        shared = {n for a in names.values() for n in a if sum(n in b for b in names.values()) > 1}
        shared |= _model_names(root) & {n for a in names.values() for n in a}
        section_types = {n: s for s, ns in names.items() for n in ns - shared}
        derived: dict[Key, frozenset[Key]] = {}
        for section, model in [("", root), *models.items()]:
            for klass in reversed(model.__mro__):  # a subclass's property wins
                for attr, value in vars(klass).items():
                    if isinstance(value, property) and not klass.__module__.startswith("pydantic"):
                        derived[(section, attr)] = frozenset(_self_reads(value, fields, section))
        root_types = frozenset(_model_names(root) - shared)
        return cls(fields, root_types, section_types, derived)


@dataclass
class _Scope:
    roots: set[str] = field(default_factory=set)
    sections: dict[str, str] = field(default_factory=dict)

    def copy(self) -> _Scope:
        return _Scope(set(self.roots), dict(self.sections))


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


class _Reader(ast.NodeVisitor):
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.scope = _Scope()
        self.found: set[Key] = set()

    # -- what an expression denotes ------------------------------------------------------------

    def _type_of(self, annotation: ast.expr | None) -> str | None:
        """What an annotation names: the root model (""), a section, or neither (None)."""
        for node in ast.walk(annotation) if annotation is not None else ():
            name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
            if name in self.schema.root_types:
                return ""
            if name in self.schema.section_types:
                return self.schema.section_types[name]
        return None

    def _is_root(self, expr: ast.expr) -> bool:
        if isinstance(expr, ast.Name):
            return expr.id == "settings" or expr.id in self.scope.roots
        return isinstance(expr, ast.Attribute) and expr.attr == "settings"

    def _section(self, expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name):
            return self.scope.sections.get(expr.id)
        if (
            isinstance(expr, ast.Attribute)
            and expr.attr in self.schema.fields
            and self._is_root(expr.value)
        ):
            return expr.attr
        return None

    # -- bindings ------------------------------------------------------------------------------

    def _bind(self, name: str, kind: str | None) -> None:
        if kind == "":
            self.scope.roots.add(name)
        elif kind is not None:
            self.scope.sections[name] = kind

    def _kind(self, value: ast.expr) -> str | None:
        return "" if self._is_root(value) else self._section(value)

    def _bind_target(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self._bind(target.id, self._kind(value))
        elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            for t, v in zip(target.elts, value.elts, strict=False):
                self._bind_target(t, v)

    def _collect(self, body: Iterable[ast.AST]) -> None:
        """Bind this scope's names, not descending into nested functions or classes. Twice, so
        ``s = self.settings; b = s.broker`` binds ``b`` whatever the order of the lines."""
        for _ in range(2):
            for stmt in body:
                for node in _walk_scope(stmt):
                    if isinstance(node, ast.Assign):
                        for target in node.targets:
                            self._bind_target(target, node.value)
                    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                        self._bind(node.target.id, self._type_of(node.annotation))
                        if node.value is not None:
                            self._bind_target(node.target, node.value)
                    elif isinstance(node, ast.NamedExpr):
                        self._bind_target(node.target, node.value)

    # -- visiting ------------------------------------------------------------------------------

    def visit_Module(self, node: ast.Module) -> None:
        self._collect(node.body)
        self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        outer, self.scope = self.scope, self.scope.copy()
        args = node.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            self.scope.roots.discard(arg.arg)  # a parameter hides an outer binding
            self.scope.sections.pop(arg.arg, None)
            self._bind(arg.arg, self._type_of(arg.annotation))
        body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
        self._collect(body)
        self.generic_visit(node)
        self.scope = outer

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._function(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        section = self._section(node.value)
        if section is not None and node.attr in self.schema.fields[section]:
            self.found.add((section, node.attr))
        elif section is not None:
            self.found |= self.schema.derived.get((section, node.attr), frozenset())
        elif self._is_root(node.value):
            self.found |= self.schema.derived.get(("", node.attr), frozenset())
        self.generic_visit(node)


def _walk_scope(node: ast.AST) -> Iterable[ast.AST]:
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (*_FUNCTIONS, ast.ClassDef)):
            yield from _walk_scope(child)


def settings_read(schema: Schema, sources: Iterable[str]) -> set[Key]:
    reader = _Reader(schema)
    for text in sources:
        reader.scope = _Scope()
        reader.visit(ast.parse(text))
    return reader.found


def unaccounted(
    root: type[BaseModel], sources: Iterable[str], refused: Collection[str]
) -> list[str]:
    """Dotted settings of ``root`` that no source reads and ``refused`` does not list."""
    schema = Schema.of(root)
    read = settings_read(schema, sources)
    return [
        f"{section}.{name}"
        for section, names in schema.fields.items()
        for name in sorted(names)
        if (section, name) not in read and f"{section}.{name}" not in refused
    ]


def code_outside_config() -> list[str]:
    return [
        path.read_text(encoding="utf-8")
        for path in sorted(SRC.rglob("*.py"))
        if path.relative_to(SRC).parts[0] != "config"
    ]


# -- the check itself -------------------------------------------------------------------------


def test_every_setting_is_read_by_code_or_refused_as_not_built() -> None:
    missing = unaccounted(Settings, code_outside_config(), UNBUILT)
    assert not missing, (
        f"settings that nothing reads and {REGISTRY} does not list: {', '.join(missing)}. "
        "Read each in code outside tq.config (settings.<section>.<key>, or "
        "s = settings.<section> and then s.<key>: see this test's docstring), or add it to "
        f"{REGISTRY} naming the issue that builds it (a non-default value is then refused)."
    )


def test_the_check_reports_a_setting_that_nothing_reads() -> None:
    class PaddedBroker(BrokerSettings):
        never_read_anywhere: int = 0
        """A setting no code reads."""

    class PaddedSettings(Settings):
        broker: PaddedBroker = PaddedBroker()

    missing = unaccounted(PaddedSettings, code_outside_config(), UNBUILT)
    assert missing == ["broker.never_read_anywhere"]


def test_a_refused_setting_needs_no_reader_but_its_registry_entry() -> None:
    without = {key: why for key, why in UNBUILT.items() if key != "api.dashboard_enabled"}
    assert "api.dashboard_enabled" in unaccounted(Settings, code_outside_config(), without)


# -- the rule, on small sources ---------------------------------------------------------------


class Net(BaseModel):
    host: str = "h"
    port: int = 1

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class Disk(BaseModel):
    path: str = "p"


class Tree(BaseModel):
    net: Net = Net()
    disk: Disk = Disk()

    @property
    def where(self) -> str:
        return self.disk.path


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("settings.net.port", {"net.port"}),
        ("self.settings.net.host", {"net.host"}),
        ("def f(settings):\n    n = settings.net\n    return n.port", {"net.port"}),
        ("d, n = settings.disk, settings.net\nn.host", {"net.host"}),
        ("def f(s):\n    c = s.settings\n    n = c.net\n    return n.port", {"net.port"}),
        ("def f(n: Net) -> int:\n    return n.port", {"net.port"}),
        ("def f(cfg: Tree | None):\n    return cfg.net.port", {"net.port"}),
        ("lambda settings: settings.net.port", {"net.port"}),
        (
            "def f(settings):\n    n = settings.net\n    def g():\n        return n.port",
            {"net.port"},
        ),
        ("settings.net.address", {"net.host", "net.port"}),
        ("self.settings.where", {"disk.path"}),
        # Not tied to the section: none of these reads a setting.
        ("proc.net.port", set()),
        ("self.port\nx.host\nport = 1", set()),
        ("def f(settings):\n    n = settings.net\ndef g(n):\n    return n.port", set()),
        ("def f(settings):\n    n = settings.net\n    return n.disk", set()),
        ("Net().port\nTree().net.port", set()),
        ("getattr(settings.net, 'port')", set()),
        ("settings.disk.port", set()),
    ],
)
def test_a_setting_is_read_only_through_its_section(source: str, expected: set[str]) -> None:
    read = settings_read(Schema.of(Tree), [source])
    assert {f"{section}.{name}" for section, name in read} == expected
