"""The command line as a user runs it: a real subprocess, exit codes and output."""

import json
import os
import subprocess
import sys

from edgecnn import __version__, count_params, list_models
from edgecnn.runtime.base import VERBOSE_ENV
from edgecnn.runtime.litert import NATIVE_NOISE
from tests.conftest import build_on_meta, needs_every_format, run_cli


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, columns=120, env=env)


def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"edgecnn {__version__}"


def test_models_json_lists_every_model_with_computed_figures():
    result = run("models", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema_version"] == 1
    rows = {row["name"]: row for row in data["models"]}
    assert set(rows) == set(list_models())
    assert rows["mobilenet_v2"]["params"] == count_params(build_on_meta("mobilenet_v2"))
    assert rows["efficientnet_b4"]["input_size"] == [3, 380, 380]
    assert rows["resnet50"]["imagenet_top1"] == 80.858  # the default weights, IMAGENET1K_V2
    assert rows["lenet5"]["imagenet_top1"] is None


def test_models_table_filters_by_pattern():
    result = run("models", "resnet")
    assert result.returncode == 0, result.stderr
    assert "resnet152" in result.stdout and "mobilenet" not in result.stdout
    assert "60.19M" in result.stdout


def test_models_info_shows_layers():
    result = run("models", "info", "mobilenet_v2", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["params"] == 3_504_872
    assert sum(layer["macs"] for layer in info["layers"]) == info["macs"]
    assert info["layers"][-1]["name"] == "classifier.1"
    table = run("models", "info", "lenet5")
    assert table.returncode == 0 and "features.6" in table.stdout


def test_unknown_model_is_one_line_with_suggestions_and_exit_1():
    result = run("models", "info", "mobilnet_v2")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: unknown model 'mobilnet_v2'; did you mean mobilenet_v2, mobilenet_v1, mobilenet_v3_small?"
    ]
    assert "Traceback" not in result.stderr


def test_pattern_matching_nothing_exits_1():
    result = run("models", "nothing-like-this")
    assert result.returncode == 1
    assert "no model matches" in result.stderr


def test_bad_option_exits_2():
    assert run("models", "--bogus").returncode == 2
    assert run("models", "info", "resnet18", "--depth", "0").returncode == 2


def test_debug_shows_the_traceback():
    result = run("models", "info", "nope", env={"EDGECNN_DEBUG": "1"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "UnknownModelError" in result.stderr


def test_help_explains_the_commands():
    result = run("--help")
    assert result.returncode == 0
    assert "models" in result.stdout and "EDGECNN_DEBUG" in result.stdout


_SWALLOWED_CTRL_C = """
import os, signal, weakref
from edgecnn import _interrupt

_interrupt.install()


def callback(_):
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):  # the handler runs between these bytecodes, inside the callback
        pass


class Collected:
    pass


collected = Collected()
reference = weakref.ref(collected, callback)
del collected  # the callback runs; its KeyboardInterrupt is printed as ignored
print("went on")
try:
    _interrupt.raise_if_interrupted()
except KeyboardInterrupt:
    print("interrupted")
"""


def test_a_ctrl_c_that_python_ignores_is_still_an_interrupt():
    """Delivered inside a weakref callback, KeyboardInterrupt is printed as "Exception ignored" and the
    work goes on; the recorded interrupt is raised again where results would be kept. In its own
    process: a signal sent into the test runner's own interpreter is not this test's to send."""
    result = subprocess.run([sys.executable, "-c", _SWALLOWED_CTRL_C], capture_output=True, text=True, timeout=120)
    assert "Exception ignored" in result.stderr and "KeyboardInterrupt" in result.stderr
    assert result.stdout.split() == ["went", "on", "interrupted"]


#: third-party log lines that must not reach a user's terminal (their own logs, not edgecnn's)
THIRD_PARTY_NOISE = ("XNNPACK", "oneDNN", "absl", "_pytree", "TensorFlow", "INFO:", "FutureWarning", "nncf")


@needs_every_format
def test_export_and_bench_print_only_edgecnn_lines(trained_lenet, tmp_path):
    exported = run_cli("export", str(trained_lenet), "--int8", "--calib-size", "16", "--output", str(tmp_path))
    assert exported.returncode == 0, exported.stderr
    artifacts = [str(tmp_path / f"lenet5_{p}.{s}") for p in ("fp32", "int8") for s in ("onnx", "xml", "tflite")]
    measured = run_cli("bench", *artifacts, "--runs", "5", "--data", "digits")
    assert measured.returncode == 0, measured.stderr
    for done in (exported, measured):
        noise = [line for line in done.stderr.splitlines() if any(word in line for word in THIRD_PARTY_NOISE)]
        assert not noise, noise
    # what was kept off the terminal is there for the asking
    verbose = run_cli("--verbose", "bench", artifacts[2], "--runs", "5")
    assert verbose.returncode == 0, verbose.stderr
    assert "XNNPACK delegate" in verbose.stderr


def test_the_native_log_filter_keeps_what_is_not_noise():
    script = (
        "import os\n"
        "from edgecnn.runtime.litert import NATIVE_NOISE, native_log_without\n"
        "with native_log_without(NATIVE_NOISE):\n"
        "    os.write(2, (NATIVE_NOISE[0] + '\\nERROR: Didn\\'t find op for builtin opcode\\n').encode())\n"
        "print('done')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout == "done\n"
    assert done.stderr == "ERROR: Didn't find op for builtin opcode\n"
    verbose = {**os.environ, VERBOSE_ENV: "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=verbose)
    assert done.stderr.splitlines() == [NATIVE_NOISE[0], "ERROR: Didn't find op for builtin opcode"]
