"""The ``needs`` marker of tests/conftest.py, on a generated test file run by pytest in this process: a test
whose extra is not installed is skipped with the line that installs it, and with EDGECNN_REQUIRE_BACKENDS=1
(``make test``, which CI runs) it fails the run instead."""

import os

import pytest

pytest_plugins = ["pytester"]

TESTS = """
import pytest

@pytest.mark.needs("openvino")
def test_openvino():
    pass

@pytest.mark.needs("prune")
def test_prune():
    pass

def test_plain():
    pass
"""


@pytest.fixture
def without_openvino(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An environment without the openvino extra and with the prune extra, whatever this one has: packages
    of those names first on the path, one that cannot be imported and one that can. The generated tests run
    with this suite's conftest as their plugin."""
    shim = pytester.mkdir("shim")
    (shim / "openvino").mkdir()
    (shim / "openvino" / "__init__.py").write_text("raise ImportError('openvino is not installed here')\n")
    (shim / "torch_pruning").mkdir()
    (shim / "torch_pruning" / "__init__.py").touch()
    monkeypatch.setenv("PYTHONPATH", str(shim), prepend=os.pathsep)
    monkeypatch.delenv("EDGECNN_REQUIRE_BACKENDS", raising=False)
    pytester.makepyfile(TESTS)
    return pytester


def test_a_missing_extra_skips_with_its_install_line(without_openvino):
    result = without_openvino.runpytest("-p", "conftest", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    assert "needs the 'openvino' extra: pip install 'edgecnn[openvino]'" in result.stdout.str()


def test_a_missing_extra_fails_the_run_where_every_backend_is_required(without_openvino, monkeypatch):
    monkeypatch.setenv("EDGECNN_REQUIRE_BACKENDS", "1")
    result = without_openvino.runpytest("-p", "conftest")
    result.assert_outcomes(passed=2, errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "needs the 'openvino' extra: pip install 'edgecnn[openvino]' (EDGECNN_REQUIRE_BACKENDS is set" in (
        result.stdout.str()
    )


def test_an_unknown_extra_is_an_error_not_a_skip(pytester):
    pytester.makepyfile("import pytest\n\n@pytest.mark.needs('openvin0')\ndef test_typo():\n    pass\n")
    result = pytester.runpytest("-p", "conftest")
    result.assert_outcomes(errors=1)
    assert "needs() names no extra of edgecnn: openvin0; valid: onnx, openvino, tflite, prune" in result.stdout.str()
