"""The documentation site: `mkdocs build --strict` passes, and the API reference is complete.

The build runs in a subprocess into `tmp_path` (a warning fails it: a broken link, a
reference to a name that does not exist, a page missing from the nav). The API pages are
generated from the docstrings by mkdocstrings; the checks read the built HTML: every name of
`ktl.__all__` is linked from the API index, and every name in a submodule's `__all__` has
its anchor on that submodule's page.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

import keras_trainloop as ktl

ROOT = pathlib.Path(__file__).parents[2]
DOCS = ROOT / "docs"
# Submodules with a page of their own under docs/api/.
API_MODULES = (
    "data",
    "trainer",
    "loop",
    "context",
    "losses",
    "metrics",
    "optimizers",
    "commandline",
    "checkpoints",
    "plots",
)
# The documentation packages (the `test` extra installs them).
DOCS_PACKAGES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _missing_docs_packages() -> list[str]:
    missing = []
    for name in DOCS_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    missing = _missing_docs_packages()
    if missing:
        pytest.skip(
            f"the docs packages are not installed ({', '.join(missing)}): "
            'pip install -e ".[test]" installs mkdocs, mkdocs-material, mkdocstrings'
        )
    site_dir = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output[-6000:]}"
    assert not re.search(r"^WARNING\b", output, re.MULTILINE), output[-6000:]
    return site_dir


def _anchors(page: pathlib.Path) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', page.read_text(encoding="utf-8")))


def test_the_site_builds_strictly(site):
    assert (site / "index.html").exists()
    for page in (
        "getting-started",
        "coming-from-fit",
        "coming-from-gomlx",
        "data",
        "plugins/progress-bar",
        "plugins/checkpoints",
        "plugins/plots",
        "plugins/schedules",
        "plugins/scaling-out",
        "notebooks",
        "api",
    ):
        assert (site / page / "index.html").exists(), page


def test_every_page_is_in_the_nav():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav):
        for item in nav:
            if isinstance(item, str):
                yield item
            else:
                for value in item.values():
                    yield from pages(value) if isinstance(value, list) else [value]

    listed = set(pages(config["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk == listed


@pytest.mark.parametrize("module", API_MODULES)
def test_every_public_name_of_a_submodule_has_its_api_entry(site, module):
    mod = importlib.import_module(f"keras_trainloop.{module}")
    names = getattr(mod, "__all__", None) or [
        name
        for name, value in vars(mod).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == mod.__name__
    ]
    anchors = _anchors(site / "api" / module / "index.html")
    missing = [name for name in names if f"keras_trainloop.{module}.{name}" not in anchors]
    assert not missing, f"not in docs/api/{module}.md: {missing}"


def test_every_name_of_ktl_is_linked_from_the_api_index(site):
    text = (site / "api" / "index.html").read_text(encoding="utf-8")
    links = set(re.findall(r'<a [^>]*href="[^"]*"[^>]*><code>ktl\.(\w+)</code></a>', text))
    assert set(ktl.__all__) <= links, sorted(set(ktl.__all__) - links)
