"""setup.cfg declares every package sgan_keras imports, each with a tested range.

The lower bounds are the versions in ``constraints-oldest.txt``, the set the
suite is run with by ``make test-oldest``; ``constraints.txt`` is the newest
tested set, the one ``make test`` installs today.
"""

import ast
import configparser
import importlib.metadata
import pathlib
import re
import sys

from packaging.requirements import Requirement
from packaging.version import Version

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def normalized(name):
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements():
    """setup.cfg's ``install_requires``, by normalized name."""
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg", encoding="utf-8")
    lines = [line.strip() for line in setup["options"]["install_requires"].splitlines()]
    parsed = [Requirement(line) for line in lines if line and not line.startswith("#")]
    return {normalized(requirement.name): requirement for requirement in parsed}


def pins(path):
    """``name==version`` lines of a constraints file, by normalized name."""
    found = {}
    for line in (REPO_ROOT / path).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            found[normalized(name)] = Version(version.strip())
    return found


def imported_top_level_modules(folder):
    """The top-level modules ``folder``'s Python files import, standard library left out."""
    names = set()
    for path in (REPO_ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {folder}


def bounds(requirement):
    """``(lower, upper)`` of a ``>=lower,<upper`` requirement (None where missing)."""
    lower = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    upper = [Version(spec.version) for spec in requirement.specifier if spec.operator == "<"]
    return (lower[0] if len(lower) == 1 else None), (upper[0] if len(upper) == 1 else None)


def test_every_package_sgan_keras_imports_is_declared():
    distributions = importlib.metadata.packages_distributions()
    declared = set(requirements())
    for module in sorted(imported_top_level_modules("sgan_keras")):
        providers = {normalized(name) for name in distributions.get(module, [])}
        assert providers & declared, f"sgan_keras imports {module} ({providers}), which " \
                                     "setup.cfg's install_requires does not declare"


def test_every_requirement_has_a_range_whose_floor_the_oldest_set_pins():
    oldest = pins("constraints-oldest.txt")
    for name, requirement in requirements().items():
        lower, upper = bounds(requirement)
        assert lower is not None and upper is not None and lower < upper, \
            f"{requirement}: give it one lower (>=) and one upper (<) bound"
        assert oldest.get(name) == lower, \
            f"constraints-oldest.txt pins {name} at {oldest.get(name)}, not at its floor {lower}"
    assert set(oldest) == set(requirements()), "constraints-oldest.txt pins only the requirements"


def assert_in_every_range(versions, where):
    """Each requirement's version in ``versions`` (by normalized name) lies in its range."""
    for name, requirement in requirements().items():
        assert name in versions, f"{where} has no {name}"
        assert requirement.specifier.contains(versions[name]), \
            f"{where}'s {name} {versions[name]} is outside setup.cfg's {requirement}"


def test_the_newest_tested_set_lies_in_every_range():
    assert_in_every_range(pins("constraints.txt"), "constraints.txt")


def test_this_environment_lies_in_every_range():
    """The suite checks the versions it runs with (``make test`` or ``make test-oldest``),
    and that the TensorFlow and Keras it imports are those installed under their names:
    tensorboard 2.16.0 pulled in tf-nightly, whose files replaced TensorFlow 2.21's
    while pip still listed tensorflow 2.21.0."""
    assert_in_every_range({name: Version(importlib.metadata.version(name))
                           for name in requirements()}, "this environment")
    import keras
    import tensorflow as tf
    for module, name in ((tf, "tensorflow"), (keras, "keras")):
        assert module.__version__ == importlib.metadata.version(name), \
            f"{name} {importlib.metadata.version(name)} is installed, but the imported " \
            f"module is {module.__version__}: another distribution wrote over its files"
