"""An output set's commit: whole under a stop signal, its record's file list sealed, and its misuses refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stargal import fsio
from stargal.paths import PRETRAINED_MODEL_DIR

# Commits a set of many files over the old one, once the test says go. A thread that only sleeps stands for
# TensorFlow's and the download threads: the kernel may hand a process's signal to any thread not blocking it.
COMMITTER = """
import os, sys, threading, time
from stargal import fsio

root, count = sys.argv[1], int(sys.argv[2])
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
with fsio.OutputSet(os.path.join(root, "set.json")) as out:
    temporaries = [out.path(os.path.join(root, f"f{i:04d}.txt")) for i in range(count)]
    for tmp in temporaries:
        tmp.write_text("new")
    print(temporaries[0], flush=True)
    sys.stdin.readline()
    out.commit({"round": "new"})
time.sleep(30)  # until the signals stop it, if they all came after the commit
"""
FILES = 200


def _write_set(root: Path, round_: str) -> Path:
    record = root / "set.json"
    with fsio.OutputSet(record) as out:
        for i in range(FILES):
            out.path(root / f"f{i:04d}.txt").write_text(round_)
        out.commit({"round": round_})
    return record


def _contents(root: Path) -> set[str]:
    return {p.read_text() for p in root.glob("f*.txt")}


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_during_a_commit_leaves_the_old_set_or_the_new_one_never_a_mix(tmp_path, stop):
    """Ctrl-C or a kill while the files of a set were being renamed into place left some new, some old, under the
    old record: a broken set until a rerun. The signals are sent again and again from the moment the first file is
    renamed (its temporary gone), as a user pressing Ctrl-C or a batch system's repeated kills would."""
    record = _write_set(tmp_path, "old")
    proc = subprocess.Popen(
        [sys.executable, "-c", COMMITTER, str(tmp_path), str(FILES)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    first = Path(proc.stdout.readline().strip())
    assert first.name.startswith(".f0000.txt.")
    proc.stdin.write("go\n")
    proc.stdin.flush()
    while first.exists() and proc.poll() is None:  # renames start once every file is hashed
        pass
    while proc.poll() is None:
        proc.send_signal(stop)
        time.sleep(0.001)
    proc.wait(timeout=10)
    assert proc.returncode != 0  # stopped, at the latest right after its commit: the test did stop it
    check = fsio.check_seal(record, deep=True)
    assert check.ok, check.describe()
    assert _contents(tmp_path) == {check.record["round"]}
    assert check.record["round"] == "new"  # the renames had started: the commit completes, then the stop


def test_stop_signals_during_a_commit_are_delivered_after_it_and_the_handlers_restored(tmp_path, monkeypatch):
    """In-process: a SIGINT raised from within the renames is held until the record is written, then raised as
    KeyboardInterrupt; the handlers are the previous ones afterwards."""
    record = tmp_path / "set.json"
    out = fsio.OutputSet(record)
    out.path(tmp_path / "a.txt").write_text("a")
    out.path(tmp_path / "b.txt").write_text("b")
    real_replace = os.replace

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        if Path(dst).name == "a.txt":
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a test runner's worker may ignore it
    try:
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        with pytest.raises(KeyboardInterrupt), out:
            out.commit({"n": 1})
        assert {s: signal.getsignal(s) for s in handlers} == handlers
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.undo()
    assert out.committed and fsio.check_seal(record).ok


# ---------------------------------------------------------------------------------------------------------
# the record's file list is sealed


def test_a_file_dropped_from_a_records_list_by_hand_is_seen_as_an_edit(tmp_path):
    """A record edited to no longer list model.onnx passed its check: predict then served the Keras model."""
    for name in ("model.keras", "model.onnx"):
        (tmp_path / name).write_bytes(name.encode())
    record = tmp_path / "model.json"
    fsio.seal(record, [tmp_path / "model.keras", tmp_path / "model.onnx"], {"threshold": 0.5})
    assert fsio.check_seal(record).ok
    edited = json.loads(record.read_text())
    del edited[fsio.INTEGRITY_KEY]["files"]["model.onnx"]
    record.write_text(json.dumps(edited))
    problems = dict(fsio.check_seal(record).problems)
    assert problems == {record: "edited after it was sealed (its content no longer matches its checksum)"}
    assert fsio.edited_after_sealing(edited)
    # nor can the list's checksum be dropped with it
    del edited[fsio.INTEGRITY_KEY]["files_sha256"]
    assert fsio.edited_after_sealing(edited)


def test_an_entry_changed_by_hand_is_seen_as_an_edit_but_new_stamps_are_not(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"a")
    record = tmp_path / "set.json"
    with fsio.OutputSet(record) as out:
        out.path(tmp_path / "b.bin").write_bytes(b"b")
        out.keep(tmp_path / "a.bin", {"size": 1, "sha256": fsio.sha256_file(tmp_path / "a.bin")})
        sealed = out.commit({"x": 1})
    assert fsio.check_seal(record).ok and not fsio.edited_after_sealing(sealed)
    restamped = json.loads(json.dumps(sealed))
    restamped[fsio.INTEGRITY_KEY]["files"]["a.bin"]["stamp"] = [0, 0, 0]  # stamps are written after the seal
    assert not fsio.edited_after_sealing(restamped)
    edited = json.loads(json.dumps(sealed))
    edited[fsio.INTEGRITY_KEY]["files"]["a.bin"]["sha256"] = "0" * 64
    assert fsio.edited_after_sealing(edited)


def test_records_sealed_before_the_file_list_was_still_verify(tmp_path):
    """Records of stargal before the list's checksum (integrity version 1) are not redone, the shipped model's
    among them: their file list is checked against the files as before."""
    shipped = fsio.read_json(PRETRAINED_MODEL_DIR / "model.json")
    assert shipped[fsio.INTEGRITY_KEY]["version"] == 1 and "files_sha256" not in shipped[fsio.INTEGRITY_KEY]
    assert fsio.check_seal(PRETRAINED_MODEL_DIR / "model.json").ok
    (tmp_path / "a.bin").write_bytes(b"a")
    record = tmp_path / "set.json"
    fsio.seal(record, [tmp_path / "a.bin"], {"x": 1})
    older = fsio.read_json(record)
    older[fsio.INTEGRITY_KEY]["version"] = 1
    del older[fsio.INTEGRITY_KEY]["files_sha256"]
    fsio.write_json(record, older)
    assert fsio.check_seal(record).ok
    older["x"] = 2  # its content checksum still holds
    assert fsio.edited_after_sealing(older)


# ---------------------------------------------------------------------------------------------------------
# misuses of an output set


def test_a_file_asked_for_twice_is_refused_not_its_first_temporary_left_behind(tmp_path):
    with fsio.OutputSet(tmp_path / "set.json") as out:
        first = out.path(tmp_path / "a.txt")
        with pytest.raises(ValueError, match="a.txt: already written to"):
            out.path(tmp_path / "a.txt")
        assert [p.name for p in tmp_path.iterdir()] == [first.name]
        out.forget(tmp_path / "a.txt")
        out.path(tmp_path / "a.txt").write_text("again")  # after forget: a new file
        out.commit({})
    assert (tmp_path / "a.txt").read_text() == "again" and fsio.check_seal(tmp_path / "set.json").ok


def test_a_file_both_written_and_removed_is_refused_not_deleted_at_commit(tmp_path):
    with fsio.OutputSet(tmp_path / "set.json") as out:
        out.path(tmp_path / "a.txt").write_text("new")
        with pytest.raises(ValueError, match="a.txt: written to this output set"):
            out.remove(tmp_path / "a.txt")
        out.remove(tmp_path / "b.txt")
        with pytest.raises(ValueError, match="b.txt: removed by this output set"):
            out.path(tmp_path / "b.txt")
        with pytest.raises(ValueError, match="b.txt: removed by this output set"):
            out.keep(tmp_path / "b.txt", {"size": 0, "sha256": ""})
        out.commit({})
    assert (tmp_path / "a.txt").read_text() == "new" and fsio.check_seal(tmp_path / "set.json").ok
