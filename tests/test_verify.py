"""``edgecnn verify --arch aarch64``: artifacts run under qemu in a Raspberry Pi's interpreters, against this machine.

The emulated environment is real: Debian's arm64 Python, PyPI's aarch64 wheels, qemu-user-static (``make
test`` installs it and apt's arm64 lists); the first test builds it into the cache, the rest reuse it.
"""

from __future__ import annotations

import json

import pytest
from conftest import artifact_path, run_cli

from edgecnn.bench.emulated import CPUS, VerifyConfig, board_cpuinfo, build_environment, verify
from edgecnn.errors import EdgeCNNError


def test_every_format_runs_on_an_emulated_pi_4_as_it_does_here(lenet_artifacts):
    paths = [artifact_path(lenet_artifacts, fmt, p) for fmt in ("tflite", "onnx", "openvino") for p in ("fp32", "int8")]
    report = verify(VerifyConfig(paths, "digits", cpu="cortex-a72", images=16))
    assert report.images == 16 and report.board["machine"] == "aarch64"
    assert "asimddp" not in report.board["cpu_flags"]  # a Cortex-A72 has no int8 dot product
    by_name = {v.artifact.rsplit("/", 1)[-1]: v for v in report.verdicts}
    assert by_name["lenet5_int8.tflite"].interpreter == "ai-edge-litert==1.4.0"
    # onnxruntime's aarch64 build crashes on an x86 /proc/cpuinfo: it runs because the board's is shown
    assert by_name["lenet5_int8.onnx"].interpreter.startswith("onnxruntime==")
    assert by_name["lenet5_fp32.xml"].computed_in == "fp32"  # pinned: OpenVINO would pick fp16 on ARM
    for verdict in report.verdicts:
        assert verdict.status == "ok", (verdict.artifact, verdict.reason)
        assert verdict.top1_agreement == 100 and verdict.max_abs_diff_over_range is not None
        assert verdict.max_abs_diff_over_range <= 1e-4
    assert report.exit_code == 0


def test_an_interpreter_too_old_for_the_artifact_fails_in_its_own_words(lenet_artifacts):
    path = artifact_path(lenet_artifacts, "onnx", "int8")  # ONNX IR version 10, from torch.onnx
    report = verify(VerifyConfig([path], "digits", cpu="cortex-a76", interpreters=["onnxruntime==1.16.3"], images=4))
    verdict = report.verdicts[0]
    assert (verdict.status, report.exit_code) == ("failed", 1)
    assert "lenet5_int8.onnx" in verdict.reason and "max supported IR version: 9" in verdict.reason
    assert "asimddp" in report.board["cpu_flags"]  # a Cortex-A76 has the int8 dot product


def test_cli_table_json_and_exit_codes(lenet_artifacts):
    int8 = str(artifact_path(lenet_artifacts, "tflite", "int8"))
    shown = run_cli("verify", int8, "--data", "digits", "--images", "4", columns=120)
    assert shown.returncode == 0, shown.stderr
    assert "cortex-a72" in shown.stdout and "ai-edge-litert==1.4.0" in shown.stdout and " ok" in shown.stdout
    as_json = json.loads(run_cli("verify", int8, "--data", "digits", "--images", "4", "--json").stdout)
    assert as_json["schema_version"] == 1 and as_json["verdicts"][0]["status"] == "ok"
    bad = run_cli("verify", int8, "--data", "digits", "--cpu", "cortex-a9")
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "unknown cpu 'cortex-a9'" in bad.stderr


@pytest.mark.parametrize(
    ("interpreters", "message"),
    [(["tensorflow==2.1"], "unknown interpreter 'tensorflow'"), (["ai-edge-litert"], "NAME==VERSION")],
)
def test_bad_options_are_one_line(lenet_artifacts, interpreters, message):
    with pytest.raises(EdgeCNNError, match=message):
        VerifyConfig([artifact_path(lenet_artifacts, "tflite", "int8")], "digits", interpreters=interpreters)


def test_the_board_cpuinfo_names_each_core():
    assert set(CPUS) == {"cortex-a72", "cortex-a76", "cortex-a53"}
    pi5 = board_cpuinfo("cortex-a76", cores=2)
    assert pi5.count("processor\t:") == 2 and "CPU part\t: 0xd0b" in pi5 and "asimddp" in pi5
    assert "asimddp" not in board_cpuinfo("cortex-a72")


def test_the_environment_is_built_once_and_shares_its_python():
    first = build_environment("aarch64", "ai-edge-litert==1.4.0")
    stamps = [first.root.stat().st_mtime_ns, first.site.stat().st_mtime_ns]
    again = build_environment("aarch64", "ai-edge-litert==1.4.0")
    assert again == first and [again.root.stat().st_mtime_ns, again.site.stat().st_mtime_ns] == stamps
    assert again.python.is_file() and (again.site / "ai_edge_litert").is_dir()
    assert build_environment("aarch64", "onnxruntime==1.16.3").root == first.root  # one Python per architecture
