"""Model files are a trust boundary: corrupted checkpoints and exports fail cleanly.

Random corruptions (truncations, bit flips, overwritten blocks, foreign zips, pickles whose
payload would create a marker file if it ran, text and empty files) of the shipped Cu SchNet
checkpoint and export are loaded in a subprocess (tests/model_file_corruptions.py). Each
must either raise an error that says what the file is and what to use instead, or load the
very same weights (a flip in bytes the archive does not use); none may run code or crash.
LAMMPS loads the corrupted exports in the slow run.
"""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import geoff
from model_file_corruptions import corruptions

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
WORKER = Path(__file__).with_name("model_file_corruptions.py")
HINTS = {"checkpoint": ("geoff.save", "geoff export", "geoff.load", "load_exported"),
         "export": ("geoff export", "geoff.load"), "lammps": ("geoff export",)}
TORCH_ADVICE = ("weights_only=False", "will likely succeed", "internal miniz error")


def _write(tmp_path, what, n, seed):
    good = (MODELS / ("cu_schnet.ckpt" if what == "checkpoint" else "cu_schnet.pt")).read_bytes()
    what = "export" if what == "lammps" else what
    marker = tmp_path / "MARKER_code_ran"
    files, kinds = [], {}
    for k, (kind, data) in enumerate(corruptions(good, n, seed, str(marker))):
        path = tmp_path / f"{k:03d}_{kind}.{'ckpt' if what == 'checkpoint' else 'pt'}"
        path.write_bytes(data)
        files.append(str(path))
        kinds[str(path)] = kind
    return files, kinds, marker


def check_corruptions(tmp_path, what, n, seed=0):
    """Load n corruptions in a worker process; assert the rules; return outcome counts."""
    files, kinds, marker = _write(tmp_path, what, n, seed)
    reference = str(MODELS / ("cu_schnet.ckpt" if what == "checkpoint" else "cu_schnet.pt"))
    proc = subprocess.run([sys.executable, str(WORKER), what, reference, *files],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"worker crashed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["file"] for r in rows] == files
    assert not marker.exists(), "a pickle payload ran"
    counts = Counter()
    for r in rows:
        kind = kinds[r["file"]]
        if r["outcome"] == "loaded":
            assert r["same"], f"{kind}: {r['file']} loaded different weights silently"
            counts["loaded, same weights"] += 1
            continue
        msg = r["message"]
        assert r["type"] in ("ValueError", "IsADirectoryError", "Exception"), (kind, r)
        assert r["file"] in msg, msg
        assert any(h in msg for h in HINTS[what]), f"{kind}: no hint in {msg!r}"
        assert not any(a in msg for a in TORCH_ADVICE), f"{kind}: torch advice in {msg!r}"
        counts["clean error"] += 1
    return counts


def test_corrupted_checkpoints_fast(tmp_path):
    counts = check_corruptions(tmp_path, "checkpoint", 20, seed=1)
    assert counts["clean error"] >= 15


def test_corrupted_exports_fast(tmp_path):
    counts = check_corruptions(tmp_path, "export", 20, seed=2)
    assert counts["clean error"] >= 15


def _lammps_ready():
    try:
        from geoff.lammps.build import is_built

        return is_built()
    except ImportError:
        return False


def test_corrupted_exports_in_lammps_fast(tmp_path):
    if not _lammps_ready():
        pytest.skip("pair_style geoff is not built (geoff lammps build)")
    counts = check_corruptions(tmp_path, "lammps", 10, seed=4)
    assert counts["clean error"] >= 7


@pytest.mark.slow
@pytest.mark.parametrize("what", ["checkpoint", "export", "lammps"])
def test_200_corruptions(tmp_path, what):
    counts = check_corruptions(tmp_path, what, 200, seed=3)
    print(f"\n{what}: 200 corruptions -> {dict(counts)}; 0 crashes, 0 payloads ran")


def test_text_file_as_checkpoint_says_what_it_is(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("epoch 3: loss 0.1\n")
    with pytest.raises(ValueError, match=r"is a text file \(it begins 'epoch 3: loss 0.1'\)"):
        geoff.load(path)


def test_export_as_checkpoint_points_to_the_right_loader():
    with pytest.raises(ValueError) as err:
        geoff.load(MODELS / "cu_schnet.pt")
    assert "TorchScript export" in str(err.value) and "load_exported" in str(err.value)
    assert not any(a in str(err.value) for a in TORCH_ADVICE)


def test_checkpoint_as_export_points_to_geoff_export():
    from geoff.export import load_exported

    with pytest.raises(ValueError, match="geoff export"):
        load_exported(MODELS / "cu_schnet.ckpt")


def test_folder_as_checkpoint(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        geoff.load(tmp_path)
