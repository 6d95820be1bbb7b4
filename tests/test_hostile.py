"""Hostile input and hostile disks (issue 10): each test failed before its fix.

Passwords in messages, storage paths that are not journals, a journal cut off mid-record,
tampered or unsafe model archives, a store disk that fills up, superseded models piling
up, model directories that ask to run their own code.
"""

import io
import json
import logging
import os
import shutil
import stat
import tarfile
from collections import namedtuple
from pathlib import Path

import optuna
import pytest
from conftest import fails

from autotl.artifacts import ARTIFACT_ATTR, SHA256_ATTR, export_best, open_artifacts, upload_model
from autotl.backbone import load_backbone, load_tokenizer
from autotl.errors import ModelError, UsageError
from autotl.storage import open_storage

SECRET_URL = "postgresql+psycopg://user:secret@127.0.0.1:1/db"  # nothing listens on port 1


# -- 1. passwords -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, masked", [
    ("postgresql://user:secret@host:5432/db", "postgresql://user:***@host:5432/db"),
    ("mysql+pymysql://admin:p%40ss@db.example.com/autotl", "mysql+pymysql://admin:***@db.example.com/autotl"),
    ("cannot open 'postgresql://u:secret@h/db': could not connect to postgresql://u:secret@h",
     "cannot open 'postgresql://u:***@h/db': could not connect to postgresql://u:***@h"),
    ("a://u:one@h1,b://v:two@h2", "a://u:***@h1,b://v:***@h2"),
    ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),  # an unescaped @ leaks nothing
    ("redis://:secret@host", "redis://:***@host"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),  # no password: unchanged
    ("sqlite:///x.db and https://huggingface.co/bert", "sqlite:///x.db and https://huggingface.co/bert"),
    ("host=db user=u password=secret", "host=db user=u password=***"),
])
def test_mask_hides_the_password_of_every_url(text, masked):
    from autotl.redact import mask

    assert mask(text) == masked


def test_the_masking_log_formatter_hides_passwords_in_messages_and_tracebacks():
    from autotl.redact import MaskingFormatter

    try:
        raise RuntimeError(f"could not connect to {SECRET_URL}")
    except RuntimeError:
        import sys

        record = logging.LogRecord("autotl", logging.ERROR, __file__, 1, "opening %s", (SECRET_URL,), sys.exc_info())
    text = MaskingFormatter("%(message)s").format(record)
    assert "secret" not in text and text.count("user:***@") == 2


def test_a_storage_that_cannot_be_opened_never_shows_its_password(monkeypatch, tmp_path, capsys):
    def driver_echoing_the_url(url):
        raise RuntimeError(f"could not connect to {url}\nsecond line of the driver's text")

    monkeypatch.setattr(optuna.storages, "get_storage", driver_echoing_the_url)
    with pytest.raises(UsageError) as caught:
        open_storage(SECRET_URL, None)
    message = str(caught.value)
    assert "secret" not in message and "user:***@127.0.0.1" in message and "\n" not in message
    monkeypatch.undo()  # the real driver: connection refused
    line = fails(capsys, ["export", "--storage", SECRET_URL, "--out", tmp_path / "out"])
    assert "secret" not in line and "cannot open storage 'postgresql+psycopg://user:***@127.0.0.1:1/db'" in line


# -- 2. storage paths -------------------------------------------------------------------------

def test_a_storage_path_that_is_not_a_journal_is_refused(tmp_path, capsys):
    line = fails(capsys, ["export", "--storage", tmp_path / "x.db", "--out", tmp_path / "out"])
    assert f"sqlite:///{tmp_path / 'x.db'}" in line and ".journal" in line
    assert not (tmp_path / "x.db").exists()  # before: a journal file named x.db


def test_a_new_journal_is_owner_only_and_announced(tmp_path, caplog):
    previous = os.umask(0o022)
    try:
        with caplog.at_level(logging.INFO, logger="autotl"):
            open_storage(str(tmp_path / "typo.journal"), None)
            open_storage(str(tmp_path / "other.log"), None)
    finally:
        os.umask(previous)
    for name in ("typo.journal", "other.log"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
        assert sum(str(tmp_path / name) in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="autotl"):
        open_storage(str(tmp_path / "typo.journal"), None)
    assert not caplog.records  # an existing journal opens quietly


def test_a_file_that_is_not_a_journal_is_refused_untouched(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("12:00 started\n12:01 stopped")
    with pytest.raises(UsageError, match=r"server\.log is not an Optuna journal file"):
        open_storage(str(log), None)
    assert log.read_text() == "12:00 started\n12:01 stopped"


# -- 3. a torn journal --------------------------------------------------------------------------

def _journal_with_trials(path, n: int) -> None:
    study = optuna.create_study(storage=open_storage(str(path), None), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)


def test_a_journal_cut_off_mid_record_opens_with_one_warning_and_goes_on(tmp_path, caplog):
    journal = tmp_path / "study.journal"
    _journal_with_trials(journal, 3)
    with open(journal, "ab") as f:  # power lost while a record was written
        f.write(b'{"op_code":5,"worker_id":"w","trial_id":3,"sta')
    with caplog.at_level(logging.WARNING, logger="autotl"):
        study = optuna.load_study(study_name="s", storage=open_storage(str(journal), None))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(journal) in warnings[0] and "incomplete record" in warnings[0]
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    # Before: the next record was glued to the torn one, and the study broke.
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = optuna.load_study(study_name="s", storage=open_storage(str(journal), None))
    assert [t.state.name for t in again.trials] == ["COMPLETE"] * 5


def test_a_journal_damaged_mid_file_is_one_error_naming_the_line(tmp_path):
    journal = tmp_path / "study.journal"
    _journal_with_trials(journal, 2)
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[4] = lines[4][:25] + lines[5]  # a torn record another one was appended to
    journal.write_bytes(b"".join(lines[:5] + lines[6:]))
    with pytest.raises(UsageError, match=rf"{journal} is damaged at line 5 .*head -n 4") as caught:
        open_storage(str(journal), None)
    assert "\n" not in str(caught.value)


# -- 4. model archives --------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    return open_artifacts(tmp_path / "store")


@pytest.fixture
def upload(tiny_model, tiny_model_dir, store):
    """Factory: run one trial of `study` that uploads the tiny model and scores `value`."""
    tokenizer = load_tokenizer(tiny_model_dir)

    def run(study, value: float) -> optuna.trial.FrozenTrial:
        trial = study.ask()
        upload_model(trial, tiny_model(), tokenizer, {"trial": trial.number, "data": {}}, max_length=32,
                     store=store)
        study.tell(trial, value)
        return study.trials[trial.number]

    return run


def _old_best(run_dir: Path) -> Path:
    (run_dir / "best").mkdir(parents=True)
    marker = run_dir / "best" / "autotl.json"
    marker.write_text('{"trial": "the old one"}')
    return marker


def test_export_checks_the_archive_against_its_recorded_checksum(tmp_path, store, upload):
    study = optuna.create_study(direction="maximize")
    trial = upload(study, 0.9)
    stored = Path(store.root) / trial.user_attrs[ARTIFACT_ATTR]
    assert len(trial.user_attrs[SHA256_ATTR]) == 64
    info = export_best(study, store, tmp_path / "first")
    assert info["trial"] == trial.number
    with tarfile.open(stored, "a") as tar:  # still a valid archive, with one more file
        _add(tar, "best/extra.txt", b"changed")
    old = _old_best(tmp_path / "run")
    with pytest.raises(ModelError, match=f"trial {trial.number}'s model .* does not match the checksum"):
        export_best(study, store, tmp_path / "run")
    assert old.read_text() == '{"trial": "the old one"}'


def _add(tar, name, data=b"", **fields):
    member = tarfile.TarInfo(name)
    member.size = len(data)
    for key, value in fields.items():
        setattr(member, key, value)
    tar.addfile(member, io.BytesIO(data) if data else None)


def _model_files(tiny_model_dir) -> dict[str, bytes]:
    return {"autotl.json": b'{"trial": 0}', "config.json": Path(tiny_model_dir, "config.json").read_bytes(),
            "model.safetensors": b"weights", "vocab.txt": Path(tiny_model_dir, "vocab.txt").read_bytes()}


HOSTILE = {  # name -> (what to change in a complete archive, words of the error)
    "symlink": ({"best/link": dict(type=tarfile.SYMTYPE, linkname="config.json")}, "is a symbolic link"),
    "symlink out": ({"best/link": dict(type=tarfile.SYMTYPE, linkname="/etc/passwd")}, "is a symbolic link"),
    "hard link": ({"best/link": dict(type=tarfile.LNKTYPE, linkname="best/config.json")}, "is a hard link"),
    "fifo": ({"best/pipe": dict(type=tarfile.FIFOTYPE)}, "not a regular file"),
    "absolute": ({"/tmp/autotl-evil": b"x"}, "absolute path or '..'"),
    "dot-dot": ({"best/../evil": b"x"}, "absolute path or '..'"),
    "outside best": ({"elsewhere/evil": b"x"}, "is outside best/"),
    "no weights": ({"best/model.safetensors": None}, r"lacks a \*\.safetensors weights file"),
    "no tokenizer": ({"best/vocab.txt": None}, "lacks tokenizer files"),
    "no config": ({"best/config.json": None}, "lacks config.json"),
    "no autotl.json": ({"best/autotl.json": None}, "lacks autotl.json"),
    "remote code": ({"best/config.json": b'{"model_type": "bert", "auto_map": {"AutoModel": "m.Evil"}}'},
                    "does not run code from model directories"),
    "bad autotl.json": ({"best/autotl.json": b"[1, 2"}, "unreadable autotl.json"),
}


def _crafted(study, store, tiny_model_dir, tmp_path, changes: dict) -> optuna.trial.FrozenTrial:
    """A finished trial whose artifact is a hand-made archive, with its true checksum."""
    from optuna.artifacts import upload_artifact

    from autotl.artifacts import _sha256

    files = {f"best/{name}": data for name, data in _model_files(tiny_model_dir).items()}
    archive = tmp_path / "crafted.tar"
    with tarfile.open(archive, "w") as tar:
        _add(tar, "best", type=tarfile.DIRTYPE)
        for name, change in {**files, **changes}.items():
            if isinstance(change, dict):
                _add(tar, name, **change)
            elif change is not None:
                _add(tar, name, change)
    trial = study.ask()
    trial.set_user_attr(SHA256_ATTR, _sha256(archive))
    trial.set_user_attr(ARTIFACT_ATTR, upload_artifact(artifact_store=store, file_path=str(archive),
                                                       study_or_trial=trial))
    study.tell(trial, 0.9)
    return study.trials[trial.number]


def test_a_complete_crafted_archive_exports(tmp_path, store, tiny_model_dir):
    study = optuna.create_study(direction="maximize")
    _crafted(study, store, tiny_model_dir, tmp_path, {})
    assert export_best(study, store, tmp_path / "run") == {"trial": 0}
    assert (tmp_path / "run" / "best" / "model.safetensors").read_bytes() == b"weights"


@pytest.mark.parametrize("case", list(HOSTILE))
def test_an_unsafe_or_incomplete_archive_is_refused_and_best_stays(case, tmp_path, store, tiny_model_dir):
    changes, words = HOSTILE[case]
    study = optuna.create_study(direction="maximize")
    trial = _crafted(study, store, tiny_model_dir, tmp_path, changes)
    old = _old_best(tmp_path / "run")
    with pytest.raises(ModelError, match=f"trial {trial.number}'s model .*{words}") as caught:
        export_best(study, store, tmp_path / "run")
    assert "\n" not in str(caught.value)
    assert old.read_text() == '{"trial": "the old one"}'
    assert {p.name for p in (tmp_path / "run").iterdir()} <= {"best", ".best.lock"}  # nothing extracted stays
    assert not Path("/tmp/autotl-evil").exists() and not (tmp_path / "evil").exists()


def test_an_upload_is_staged_on_the_store_disk(monkeypatch, store, upload):
    import optuna.artifacts

    staged = []
    real = optuna.artifacts.upload_artifact

    def spy(*, artifact_store, file_path, study_or_trial, **kwargs):
        staged.append(Path(file_path))
        return real(artifact_store=artifact_store, file_path=file_path, study_or_trial=study_or_trial, **kwargs)

    monkeypatch.setattr(optuna.artifacts, "upload_artifact", spy)
    upload(optuna.create_study(direction="maximize"), 0.9)
    assert len(staged) == 1 and Path(store.root) in staged[0].parents  # before: /tmp
    assert [p.name for p in Path(store.root).iterdir() if p.name.startswith(".")] == []  # staging removed


def test_an_upload_without_the_space_for_it_is_a_clear_oserror(monkeypatch, store, tiny_model, tiny_model_dir):
    usage = namedtuple("usage", "total used free")
    asked = []

    def nearly_full(path):
        asked.append(Path(path))
        return usage(10 << 30, (10 << 30) - (1 << 20), 1 << 20)

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    with pytest.raises(OSError, match=rf"not enough free space to upload trial 0's model: .* in {store.root}"):
        upload_model(trial, tiny_model(), load_tokenizer(tiny_model_dir), {"trial": 0, "data": {}},
                     max_length=32, store=store)
    assert asked == [Path(store.root)] and ARTIFACT_ATTR not in study.trials[0].user_attrs


# -- 5. superseded models -----------------------------------------------------------------------

def _in_store(store, trial) -> bool:
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        store.open_reader(trial.user_attrs[ARTIFACT_ATTR]).close()
        return True
    except ArtifactNotFound:
        return False


def test_superseded_models_are_removed_but_the_best_and_the_newest_stay(store, upload):
    study = optuna.create_study(direction="maximize")
    trials = [upload(study, value) for value in (0.5, 0.9, 0.6, 0.7, 0.8, 0.85)]
    kept = [t.number for t in trials if _in_store(store, t)]
    assert kept == [1, 3, 4, 5]  # the best (1) and the newest three uploads


def test_a_failing_removal_never_fails_the_upload(tmp_path, tiny_model, tiny_model_dir):
    from autotl.artifacts import ModelStore

    class StuckStore(ModelStore):
        removals = 0

        def remove(self, artifact_id):
            StuckStore.removals += 1
            raise PermissionError(13, "Permission denied", artifact_id)

    (tmp_path / "store").mkdir()
    store = StuckStore(tmp_path / "store")
    study = optuna.create_study(direction="maximize")
    tokenizer = load_tokenizer(tiny_model_dir)
    for value in (0.1, 0.2, 0.3, 0.4, 0.5):
        trial = study.ask()
        assert upload_model(trial, tiny_model(), tokenizer, {"trial": trial.number, "data": {}}, max_length=32,
                            store=store)
        study.tell(trial, value)
    assert StuckStore.removals >= 1  # it tried, and the uploads went on


# -- 6. no code from model directories ----------------------------------------------------------

@pytest.fixture
def fresh_backbones():
    load_backbone.cache_clear()
    load_tokenizer.cache_clear()
    yield
    load_backbone.cache_clear()
    load_tokenizer.cache_clear()


@pytest.mark.parametrize("change, words", [
    ({"auto_map": {"AutoModel": "modeling_evil.EvilModel"}}, "config.json has an auto_map entry"),
    ({"model_type": "evil-arch"}, "config.json's model_type 'evil-arch' is not one transformers ships"),
])
def test_a_model_directory_asking_for_its_own_code_is_refused(change, words, tiny_model_dir, tmp_path,
                                                             fresh_backbones):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ModelError, match=rf"model directory {model} asks for custom code \({words}\); autotl does "
                                         "not run code from model directories"):
        load_backbone(str(model))


def test_a_search_on_such_a_directory_is_one_error_line(tiny_csv, tiny_model_dir, tmp_path, capsys,
                                                        fresh_backbones, no_training):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "tokenizer_config.json").write_text(json.dumps({
        **json.loads((model / "tokenizer_config.json").read_text()),
        "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}}))
    line = fails(capsys, ["search", tiny_csv, "--model", model, "--out", tmp_path / "run", "--n-trials", "1",
                          "--no-progress"])
    assert "tokenizer_config.json has an auto_map entry" in line and "does not run code" in line


def test_every_load_refuses_remote_code_explicitly(monkeypatch, tiny_model_dir, fresh_backbones):
    import transformers

    from autotl.backbone import load_pretrained

    seen = {}
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModel,
                transformers.AutoModelForSequenceClassification):
        real = cls.from_pretrained

        def spy(*args, _real=real, _name=cls.__name__, **kwargs):
            seen[_name] = kwargs.get("trust_remote_code", "not passed")
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    load_backbone(tiny_model_dir)
    load_pretrained(tiny_model_dir, standard_head=True, num_labels=2)
    load_pretrained(tiny_model_dir, standard_head=False)
    assert seen == {"AutoConfig": False, "AutoTokenizer": False, "AutoModel": False,
                    "AutoModelForSequenceClassification": False}
