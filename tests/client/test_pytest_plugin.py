"""
The ``scripted_server`` fixture under each async runner: docs/testing.md's example,
run by pytest in a subprocess with anyio's plugin, pytest-asyncio strict and auto.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers.processes import ROOT

pytest_plugins = ["pytester"]

FENCE = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
ANYIO_MARK = "@pytest.mark.anyio\n"
# pytest-asyncio warns at start-up when this is unset, and -W error makes it fatal
ASYNCIO_INI = ("-o", "asyncio_default_fixture_loop_scope=function")


def docs_example() -> str:
    """The one example of docs/testing.md that uses the fixture."""
    text = (ROOT / "docs" / "testing.md").read_text()
    (code,) = [c for c in FENCE.findall(text) if "(scripted_server)" in c]
    return code


def run(pytester: pytest.Pytester, code: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_example=code)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", *args)


def test_docs_example_is_an_anyio_test() -> None:
    """The example found is the fixture's, marked for anyio once (what the variants edit)."""
    code = docs_example()
    assert code.count(ANYIO_MARK) == 1
    assert 'pytest_plugins = ["quotes_client.testing.pytest_plugin"]' in code


@pytest.mark.parametrize(
    "args",
    [("-p", "no:asyncio"), ("--asyncio-mode=strict", *ASYNCIO_INI)],
    ids=["anyio-alone", "anyio-beside-pytest-asyncio-strict"],
)
def test_anyio(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    """As written, under anyio's plugin, with or without pytest-asyncio loaded in strict mode."""
    result = run(pytester, docs_example(), *args)
    result.assert_outcomes(passed=1)


def test_anyio_without_pytest_asyncio_installed(pytester: pytest.Pytester) -> None:
    """The plugin imports and the anyio test passes when pytest_asyncio cannot be imported."""
    pytester.makeconftest("import sys\n\nsys.modules['pytest_asyncio'] = None\n")
    result = run(pytester, docs_example(), "-p", "no:asyncio")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("mark", "anyio"),
    [
        ("@pytest.mark.asyncio\n", "no:anyio"),
        ("@pytest.mark.asyncio\n", "anyio"),
        ('@pytest.mark.asyncio(loop_scope="module")\n', "no:anyio"),
    ],
    ids=["strict", "strict-beside-anyio", "strict-module-loop"],
)
def test_pytest_asyncio_strict(pytester: pytest.Pytester, mark: str, anyio: str) -> None:
    """Marked for pytest-asyncio in strict mode, on the default loop scope and a wider one."""
    code = docs_example().replace(ANYIO_MARK, mark)
    result = run(pytester, code, "-p", anyio, "--asyncio-mode=strict", *ASYNCIO_INI)
    result.assert_outcomes(passed=1)


def test_pytest_asyncio_auto(pytester: pytest.Pytester) -> None:
    """Unmarked, under pytest-asyncio's auto mode."""
    code = docs_example().replace(ANYIO_MARK, "")
    result = run(pytester, code, "-p", "no:anyio", "--asyncio-mode=auto", *ASYNCIO_INI)
    result.assert_outcomes(passed=1)


def test_no_runner_fails_with_a_hint(pytester: pytest.Pytester) -> None:
    """A test that no async runner handles gets an error naming both markers."""
    code = (
        'pytest_plugins = ["quotes_client.testing.pytest_plugin"]\n\n\n'
        "def test_sync(scripted_server):\n    pass\n"
    )
    result = run(pytester, code, "--asyncio-mode=strict", *ASYNCIO_INI)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.anyio*@pytest.mark.asyncio*"])


def test_anyio_on_trio_fails_with_a_hint(pytester: pytest.Pytester) -> None:
    """Under anyio on a backend other than asyncio, the fixture says it needs asyncio."""
    pytester.makeconftest(
        "import pytest\n\n\n@pytest.fixture\ndef anyio_backend():\n    return 'trio'\n"
    )
    result = run(pytester, docs_example(), "-p", "no:asyncio")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*scripted_server runs on asyncio, not on anyio's trio backend*"])
