"""The package's import graph, read from the source with `ast` (nothing is imported).

Rules, for every module of keras_trainloop but the root `__init__.py` (the
public facade, which re-exports every layer lazily):

- Layers: data <- trainer <- loop <- plugins, over a base of shared modules.
  A module imports at run time only from its own layer or lower ones
  (imports inside functions count); under `if TYPE_CHECKING:` it may name
  types of any layer. The root package (`import keras_trainloop`) counts as
  the plugins layer: it hands out every layer.
- Private modules: `pkg._mod` is imported only by `pkg/__init__.py` and the
  modules inside `pkg` (so one plugin never reaches into another's `_mod`).
- `keras.src`: only where Keras has no public name, each use listed below
  with its reason.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

PACKAGE = "keras_trainloop"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

LAYERS = ("base", "data", "trainer", "loop", "plugins")
"""Lowest first: a layer may import itself and those before it."""

LAYER_OF = {
    "_backend": "base",
    "_forwarding": "base",
    "_describe": "base",
    "_specs": "base",
    "_labels": "base",
    "context": "base",
    "losses": "base",
    "metrics": "base",
    "optimizers": "base",
    "data": "data",
    "trainer": "trainer",
    "loop": "loop",
    "commandline": "plugins",
    "checkpoints": "plugins",
    "plots": "plugins",
    "examples": "plugins",
}
"""The layer of each top-level module or subpackage of keras_trainloop."""

FACADE_LAYER = "plugins"
"""The layer of the root package itself (`import keras_trainloop as ktl`)."""

KERAS_SRC_ALLOWED = {
    ("keras_trainloop.trainer._keras_state", "keras.src.backend.common.stateless_scope"): (
        "get_stateless_scope/in_stateless_scope: Keras exports only the class, keras.StatelessScope"
    ),
    ("keras_trainloop.trainer._distribution", "keras.src.distribution.distribution_lib"): (
        "Distribution, the base class of keras.distribution.DataParallel and "
        "ModelParallel, has no public name"
    ),
    ("keras_trainloop.data._dispatch", "keras.src.trainers.data_adapters"): (
        "is_tf_dataset/is_grain_dataset: how fit tells its inputs apart without importing "
        "TensorFlow or grain; not exported"
    ),
    ("keras_trainloop.data._pydataset", "keras.src.trainers.data_adapters.py_dataset_adapter"): (
        "PyDatasetAdapter: fit's reader of a keras.utils.PyDataset (workers, enqueuer, "
        "shuffling); not exported"
    ),
}
"""(module, keras.src module) -> why no public Keras name does."""


@dataclasses.dataclass(frozen=True)
class Import:
    """One imported module, as a statement of `module` names it."""

    path: str  # Relative to the repository, for messages.
    line: int
    module: str  # The importing module, dotted.
    target: str  # The imported module, dotted (`from m import name`: m, or m.name if a module).
    text: str  # The statement, for messages.
    type_only: bool  # Under `if TYPE_CHECKING:`.

    def violation(self, rule: str) -> str:
        kind = " (under TYPE_CHECKING)" if self.type_only else ""
        return f"{self.path}:{self.line}: `{self.text}`{kind}: {rule}"


def _module_name(path: Path) -> tuple[str, bool]:
    """(dotted name, whether it is a package's `__init__`) of a file under PACKAGE_DIR."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _is_module(dotted: str) -> bool:
    """Whether `dotted` is a module or package of keras_trainloop (a file, not a name in one)."""
    if dotted != PACKAGE and not dotted.startswith(PACKAGE + "."):
        return False
    base = PACKAGE_DIR.parent.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    """The imports of one module: statements, and `importlib.import_module("literal")`."""

    def __init__(self, path: str, module: str, is_package: bool):
        self.path = path
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.imports: list[Import] = []
        self.keras_src_uses: list[tuple[int, str]] = []  # `keras.src....` as an expression.
        self._type_only = 0

    def _add(self, node: ast.AST, target: str, text: str) -> None:
        self.imports.append(
            Import(self.path, node.lineno, self.module, target, text, self._type_only > 0)
        )

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_only += 1
        for child in node.body:
            self.visit(child)
        self._type_only -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name, ast.unparse(node))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        if source == "__future__":
            return
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            self._add(node, submodule if _is_module(submodule) else source, ast.unparse(node))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if (
            name in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            self._add(node, node.args[0].value, ast.unparse(node))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "src" and isinstance(node.value, ast.Name) and node.value.id == "keras":
            self.keras_src_uses.append((node.lineno, "keras.src"))
        self.generic_visit(node)


def collect(source: str, module: str, *, is_package: bool = False, path: str = "") -> _Collector:
    """Parses `source` as the module `module` and collects what it imports."""
    collector = _Collector(path or module, module, is_package)
    collector.visit(ast.parse(source))
    return collector


def _package_modules() -> list[_Collector]:
    modules = []
    for file in sorted(PACKAGE_DIR.rglob("*.py")):
        module, is_package = _module_name(file)
        path = str(file.relative_to(PACKAGE_DIR.parent))
        modules.append(collect(file.read_text(), module, is_package=is_package, path=path))
    return modules


MODULES = _package_modules()


def layer_of(module: str) -> str | None:
    """The layer of a keras_trainloop module (None: not classified in LAYER_OF)."""
    if module == PACKAGE:
        return FACADE_LAYER
    return LAYER_OF.get(module.split(".")[1])


def _in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violations(imp: Import) -> list[str]:
    """Runtime imports of a higher layer."""
    if imp.type_only or imp.module == PACKAGE or not _in_package(imp.target, PACKAGE):
        return []
    own, theirs = layer_of(imp.module), layer_of(imp.target)
    if own is None or theirs is None:
        return []  # test_every_module_has_a_layer reports it.
    if LAYERS.index(theirs) <= LAYERS.index(own):
        return []
    return [
        imp.violation(
            f"layer rule: {own} ({imp.module}) imports {theirs} ({imp.target}) at run time. "
            f"Fix: depend downwards only ({' <- '.join(LAYERS)}); for a type, import it under "
            "`if TYPE_CHECKING:`; for a behaviour, let the higher layer register it."
        )
    ]


def private_violations(imp: Import) -> list[str]:
    """Imports of another package's private `_module` (any import, type-only too)."""
    if imp.module == PACKAGE or not _in_package(imp.target, PACKAGE):
        return []
    parts = imp.target.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            owner = ".".join(parts[:i])
            if not _in_package(imp.module, owner):
                return [
                    imp.violation(
                        f"private module rule: {imp.module} imports {'.'.join(parts[: i + 1])}, "
                        f"private to {owner}. Fix: import it from {owner}'s public surface "
                        f"(export it in {owner.replace('.', '/')}/__init__.py)."
                    )
                ]
            return []
    return []


def keras_src_violations(collector: _Collector) -> list[str]:
    """`keras.src` imports and uses not in KERAS_SRC_ALLOWED."""
    found = []
    for imp in collector.imports:
        if _in_package(imp.target, "keras.src") and (
            (imp.module, imp.target) not in KERAS_SRC_ALLOWED
        ):
            found.append(
                imp.violation(
                    f"keras.src rule: {imp.target} is Keras' private code. Fix: use the public "
                    "name (keras.*); where none exists, add (module, keras.src module) with the "
                    "reason to KERAS_SRC_ALLOWED in tests/test_layering.py."
                )
            )
    for line, text in collector.keras_src_uses:
        found.append(
            f"{collector.path}:{line}: `{text}...`: keras.src rule: private Keras code used as "
            "an attribute. Fix: use the public name (keras.*)."
        )
    return found


def _report(violations: list[str]) -> str:
    return f"{len(violations)} violation(s):\n" + "\n".join(violations)


def test_every_module_has_a_layer():
    unclassified = sorted(
        {
            f"{c.path}: {c.module.split('.')[1]!r}"
            for c in MODULES
            if c.module != PACKAGE and layer_of(c.module) is None
        }
    )
    assert not unclassified, (
        "Modules in no layer (fix: add them to LAYER_OF in tests/test_layering.py):\n"
        + "\n".join(unclassified)
    )


def test_runtime_imports_go_to_the_same_or_a_lower_layer():
    violations = [v for c in MODULES for imp in c.imports for v in layer_violations(imp)]
    assert not violations, _report(violations)


def test_private_modules_are_imported_only_inside_their_package():
    violations = [v for c in MODULES for imp in c.imports for v in private_violations(imp)]
    assert not violations, _report(violations)


def test_keras_src_only_where_keras_has_no_public_name():
    violations = [v for c in MODULES for v in keras_src_violations(c)]
    assert not violations, _report(violations)


def test_keras_src_allowlist_has_no_stale_entries():
    used = {(imp.module, imp.target) for c in MODULES for imp in c.imports}
    stale = sorted(
        f"{module}: {target}"
        for module, target in KERAS_SRC_ALLOWED
        if (module, target) not in used
    )
    assert not stale, "Unused KERAS_SRC_ALLOWED entries (fix: remove them):\n" + "\n".join(stale)


# The checker itself, on small sources: (importing module, source, the rule it breaks or None).
_TC = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    "
CASES = [
    pytest.param(
        "keras_trainloop.trainer._x",
        "from keras_trainloop.data import Dataset",
        None,
        id="lower_layer",
    ),
    pytest.param(
        "keras_trainloop.trainer._x",
        "from keras_trainloop.loop import Loop",
        "layer rule",
        id="higher_layer",
    ),
    pytest.param(
        "keras_trainloop.trainer._x",
        "def f():\n    import keras_trainloop.loop",
        "layer rule",
        id="higher_layer_inside_a_function",
    ),
    pytest.param(
        "keras_trainloop.trainer._x",
        _TC + "from keras_trainloop.loop import Loop",
        None,
        id="higher_layer_for_types",
    ),
    pytest.param(
        "keras_trainloop.trainer._x",
        "if TYPE_CHECKING:\n    pass\nelse:\n    from keras_trainloop.loop import Loop",
        "layer rule",
        id="higher_layer_in_type_checking_else",
    ),
    pytest.param(
        "keras_trainloop.loop._x", "from ..trainer import Trainer", None, id="relative_lower_layer"
    ),
    pytest.param(
        "keras_trainloop.data._x",
        "from ..trainer import Trainer",
        "layer rule",
        id="relative_higher_layer",
    ),
    pytest.param(
        "keras_trainloop.context",
        "importlib.import_module('keras_trainloop.loop')",
        "layer rule",
        id="import_module_higher_layer",
    ),
    pytest.param(
        "keras_trainloop.data._x",
        "import keras_trainloop as ktl",
        "layer rule",
        id="facade_below_plugins",
    ),
    pytest.param(
        "keras_trainloop.examples.x",
        "import keras_trainloop as ktl",
        None,
        id="facade_from_plugins",
    ),
    pytest.param(
        "keras_trainloop.plots._x",
        "from keras_trainloop.commandline._detect import in_notebook",
        "private module rule",
        id="other_plugins_private_module",
    ),
    pytest.param(
        "keras_trainloop.plots._x",
        "from keras_trainloop.commandline import _detect",
        "private module rule",
        id="other_plugins_private_module_by_name",
    ),
    pytest.param(
        "keras_trainloop.plots._x",
        _TC + "from keras_trainloop.checkpoints._checkpoint import Checkpoint",
        "private module rule",
        id="other_plugins_private_module_for_types",
    ),
    pytest.param(
        "keras_trainloop.plots._x",
        "from keras_trainloop.commandline import in_notebook",
        None,
        id="other_plugins_public_surface",
    ),
    pytest.param(
        "keras_trainloop.plots._x",
        "from keras_trainloop.plots._points import Point",
        None,
        id="own_packages_private_module",
    ),
    pytest.param(
        "keras_trainloop.plots",
        "from keras_trainloop.plots._points import Point",
        None,
        id="own_init_private_module",
    ),
    pytest.param(
        "keras_trainloop.metrics._x",
        "from keras_trainloop._labels import as_list",
        None,
        id="parent_packages_private_module",
    ),
    pytest.param(
        "keras_trainloop.trainer._x",
        "from keras.src.losses import Loss",
        "keras.src rule",
        id="keras_src_import",
    ),
    pytest.param(
        "keras_trainloop.trainer._x",
        "x = keras.src.losses.Loss",
        "keras.src rule",
        id="keras_src_attribute",
    ),
    pytest.param(
        "keras_trainloop.trainer._keras_state",
        "from keras.src.backend.common.stateless_scope import in_stateless_scope",
        None,
        id="keras_src_allowed",
    ),
]


@pytest.mark.parametrize(("module", "source", "rule"), CASES)
def test_checker_reports_each_rule_with_file_line_and_import(module, source, rule):
    collector = collect(source, module, is_package=module == "keras_trainloop.plots")
    found = [
        v for imp in collector.imports for v in layer_violations(imp) + private_violations(imp)
    ]
    found += keras_src_violations(collector)
    if rule is None:
        assert not found
    else:
        assert len(found) == 1, found
        assert rule in found[0]
        assert found[0].startswith(f"{module}:{len(source.splitlines())}: ")
