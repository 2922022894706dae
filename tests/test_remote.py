"""``edgecnn bench --remote`` for real: an OpenSSH server on 127.0.0.1 and, as the 'device', a separate
Python with numpy<2 and tflite-runtime 2.14 (an old Pi OS stack) that has never seen edgecnn."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edgecnn.bench.benchmark import BenchConfig, bench
from edgecnn.bench.tune import TuneConfig, tune
from edgecnn.errors import EdgeCNNError
from tests.conftest import artifact_path, run_cli
from tests.loopback_ssh import device_python, free_port, loopback_ssh

DEVICE_VENV = Path(__file__).resolve().parent.parent / ".venv-device"


@pytest.fixture(scope="module")
def ssh(tmp_path_factory):
    with loopback_ssh(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="module")
def device() -> str:
    return str(device_python(DEVICE_VENV))


def remote_config(ssh, device, paths, **settings) -> BenchConfig:
    return BenchConfig(paths, remote=ssh.alias, remote_python=device, ssh_config=ssh.config, **settings)


def test_the_device_python_is_an_old_stack_without_edgecnn(device):
    probe = (
        "import numpy, tflite_runtime; print(numpy.__version__)\ntry:\n import edgecnn\nexcept ImportError: print('no')"
    )
    out = subprocess.run([device, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith("1.") and out[1] == "no"


def test_remote_benchmark_returns_the_device_figures_and_accuracy(ssh, device, lenet_artifacts):
    paths = [artifact_path(lenet_artifacts, "tflite", p) for p in ("fp32", "int8")]
    report = bench(remote_config(ssh, device, paths, runs=30, threads=1, data="digits", cooldown=0.5))
    (host,) = report.hosts
    assert host.host == ssh.alias and host.error is None
    assert host.environment["numpy"].startswith("1.") and host.environment["threads"] == 1
    before, after, warmup = (host.environment[key] for key in ("state_before", "state_after", "warmup"))
    assert set(before) == set(after) == {"governor", "temperature_c", "throttled", "throttling"}
    assert host.environment["cooldown_s"] == 0.5 and warmup["calls"] >= 10 and warmup["stable"] in (True, False)
    for result in host.results:  # the interval and the variation, computed on the device by numpy 1.x
        stats = result["latency"]
        assert stats["p50_ci_ms"][0] <= stats["p50_ms"] <= stats["p50_ci_ms"][1]
        assert stats["p90_ci_ms"][0] <= stats["p90_ms"] <= stats["p90_ci_ms"][1]
        assert stats["run_to_run_cv_pct"] >= 0
    fp32, int8 = host.results
    assert [r["artifact"] for r in host.results] == [str(p) for p in paths]
    assert {r["interpreter"] for r in host.results} == {"tflite-runtime"}
    assert (fp32["artifact_precision"], int8["artifact_precision"]) == ("fp32", "int8")
    assert fp32["model"] == "lenet5" and fp32["latency"]["runs"] == 30 and fp32["latency"]["p50_ms"] > 0
    assert fp32["accuracy"]["images"] == 269  # the held-out split, chosen on the host from the metadata
    assert fp32["accuracy"]["top1"] == pytest.approx(lenet_artifacts.reference_accuracy)
    exported_int8 = next(a for a in lenet_artifacts.artifacts if Path(a.path) == paths[1])
    assert abs(int8["accuracy"]["top1"] - exported_int8.verification["accuracy"]) <= 1.0


def test_paths_with_spaces_and_quotes_cannot_reach_the_remote_shell(ssh, device, lenet_artifacts, tmp_path):
    folder = tmp_path / "a b'c\"d $(touch pwned)"
    folder.mkdir()
    path = folder / "my model;rm -rf x.tflite"
    shutil.copy(artifact_path(lenet_artifacts, "tflite", "fp32"), path)
    report = bench(remote_config(ssh, device, [path], runs=3))
    assert report.hosts[0].results[0]["artifact"] == str(path)
    assert not Path("pwned").exists() and not (Path.home() / "pwned").exists()


def test_unreachable_host_is_a_clear_error(tmp_path, lenet_artifacts):
    config = tmp_path / "ssh_config"
    config.write_text(f"Host closed\n  HostName 127.0.0.1\n  Port {free_port()}\n")
    path = artifact_path(lenet_artifacts, "tflite", "fp32")
    with pytest.raises(EdgeCNNError, match=r"cannot reach closed over SSH: .*(refused|closed)"):
        bench(BenchConfig([path], remote="closed", ssh_config=config, runs=3))


def test_missing_runtime_on_the_device_is_a_clear_error(ssh, device, lenet_artifacts):
    path = artifact_path(lenet_artifacts, "onnx", "fp32")
    with pytest.raises(EdgeCNNError, match=f"{ssh.alias}: onnxruntime is not installed: pip install onnxruntime"):
        bench(remote_config(ssh, device, [path], runs=3))


def test_missing_python_on_the_device_is_a_clear_error(ssh, lenet_artifacts):
    path = artifact_path(lenet_artifacts, "tflite", "fp32")
    with pytest.raises(EdgeCNNError, match="/opt/none/python3 not found there; point --remote-python"):
        bench(remote_config(ssh, "/opt/none/python3", [path], runs=3))


def test_a_remote_run_past_its_timeout_is_a_clear_error(ssh, device, lenet_artifacts):
    path = artifact_path(lenet_artifacts, "tflite", "int8")
    with pytest.raises(EdgeCNNError, match="did not finish within 2 s"):
        bench(remote_config(ssh, device, [path], runs=None, min_time=6, timeout=2))


def test_fleet_measures_each_host_and_reports_the_one_that_failed(ssh, device, lenet_artifacts, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(ssh.config.read_text() + f"Host closed\n  HostName 127.0.0.1\n  Port {free_port()}\n")
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(f"# the lab\n{ssh.alias} {device}\nclosed\n")
    path = artifact_path(lenet_artifacts, "tflite", "int8")
    done = run_cli("bench", str(path), "--fleet", str(hosts), "--ssh-config", str(config), "--runs", "5", "--json")
    assert done.returncode == 1  # a board that could not be measured fails the command
    measured, failed = json.loads(done.stdout)["hosts"]
    assert measured["host"] == ssh.alias and measured["results"][0]["latency"]["runs"] == 5
    assert failed["host"] == "closed" and "cannot reach closed" in failed["error"]


def test_cli_remote_prints_the_device_table(ssh, device, lenet_artifacts):
    path = artifact_path(lenet_artifacts, "tflite", "int8")
    args = ["bench", str(path), "--remote", ssh.alias, "--remote-python", device, "--ssh-config", str(ssh.config)]
    done = run_cli(*args, "--runs", "5")
    assert done.returncode == 0, done.stderr
    assert f"{ssh.alias}:" in done.stdout and "lenet5_int8.tflite" in done.stdout


@pytest.mark.needs("tflite")
def test_tune_measures_on_the_device_and_names_its_interpreter_in_the_card(ssh, device, trained_lenet, tmp_path):
    config = TuneConfig(
        str(trained_lenet),
        device=ssh.alias,
        formats="tflite",
        remote_python=device,
        ssh_config=ssh.config,
        runs=10,
        output=tmp_path / "tune",
    )
    report = tune(config)
    assert {c.interpreter for c in report.candidates} == {"tflite-runtime"}  # the device's, not this machine's
    assert report.environment["numpy"].startswith("1.") and report.device == ssh.alias
    assert report.chosen.drop is not None and report.chosen.drop <= config.max_drop
    card = (tmp_path / "tune/deploy/DEPLOYMENT.md").read_text()
    assert f"on {ssh.alias}" in card and "(tflite-runtime)" in card
