"""Ctrl-C and SIGTERM stop a whole ``scsena train`` run; ``--resume`` finishes it.

Each test name below is referenced from docs/reliability.md.
"""

import json
import signal
import subprocess
import sys

import pytest

from scsena.cli import main

SMALL = ["--data", "simulate", "--sim-cells", "600", "--sim-genes", "150"]
SMALL += ["--sim-targets", "4", "--sim-doubles", "2", "--threads", "1"]
RUN = "import sys; from scsena.cli import main; sys.exit(main())"


def _train_and_signal(save_dir, sig) -> tuple[int, str]:
    """Start a two-seed run, send ``sig`` once its first epoch ends; exit status, stderr."""
    args = ["train", *SMALL, "--epochs", "60", "--seeds", "0", "1", "--save-dir", str(save_dir)]
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"MLFLOW_DISABLE_TELEMETRY": "true", **__import__("os").environ},
        # Ctrl-C as a terminal delivers it, even under a job that ignores SIGINT
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    err = []
    for line in proc.stderr:
        err.append(line)
        if line.startswith("epoch 1/"):
            proc.send_signal(sig)
            break
    rest_out, rest_err = proc.communicate(timeout=240)
    return proc.returncode, "".join(err) + rest_err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_interrupt_stops_the_whole_run(tmp_path, capsys, sig, status):
    save = tmp_path / "run"
    code, err = _train_and_signal(save, sig)
    assert code == status, err[-3000:]
    assert "interrupted after" in err and "--resume" in err
    recorded = json.loads((save / "seed0" / "status.json").read_text())
    assert recorded["status"] == "interrupted" and recorded["epochs_done"] < 60
    assert not (save / "seed1").exists()  # no further seed started
    # evaluating refuses the interrupted seed, naming the way to finish it
    with pytest.raises(SystemExit, match=r"seed 0 .* was interrupted .* --resume"):
        main(["evaluate", "--model-dir", str(save)])
    if sig == signal.SIGINT:
        # --resume finishes the interrupted seed from its last epoch and the next seed
        assert main(["train", "--save-dir", str(save), "--resume"]) == 0
        for seed in (0, 1):
            done = json.loads((save / f"seed{seed}" / "status.json").read_text())
            assert done == {"status": "done", "epochs_done": 60, "max_epochs": 60}
            assert not (save / f"seed{seed}" / "checkpoints").exists()
        assert main(["evaluate", "--model-dir", str(save)]) == 0


def test_cli_resume_needs_a_run(tmp_path):
    with pytest.raises(SystemExit, match="--resume needs a run"):
        main(["train", "--save-dir", str(tmp_path / "none"), "--resume"])
