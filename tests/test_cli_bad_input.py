"""Bad input, tried at scale: every command given random bytes, text that is not UTF-8,
NUL bytes, a 10 MB line, a folder, a FIFO, a missing, empty or unreadable file, ends
with one line on stderr and exit status 1 (2 for a usage error): never a traceback,
never a hang, never a half-written output.

The model stays out: ``Transcriber`` is replaced by one that decodes the audio as the
real one does (``probe``, then ``stream_audio``) and returns a fixed transcript, and the
batch engine runs rows in this process. Each command runs in-process (``CliRunner``) in
a thread, so that a read that blocks (a FIFO) fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from typer.testing import CliRunner

import ctxasr.transcribe
from ctxasr.audio import SAMPLE_RATE, probe, stream_audio
from ctxasr.batch import job as job_module
from ctxasr.batch.rows import read_tasks, transcribe_row
from ctxasr.cli import app
from ctxasr.models import ResolvedModel
from ctxasr.results import Transcript

AUDIO = Path(__file__).parent / "fixtures" / "audio"
WAV = (AUDIO / "1272-128104-0000.wav").read_bytes()  # 5.9 s, 16 kHz
FLAC_HEAD = (AUDIO / "jfk.flac").read_bytes()[:8192]
BIG_LINE = b"x" * 10_000_000 + b"\n"  # a 10 MB line
HUGE_INT = b"1" * 5000  # more digits than Python turns into an int by default
DEEP = b"[" * 100_000  # deeper than json's recursion allows
HANG_S = 15  # a command still running after this is hung
ROOT = os.geteuid() == 0  # chmod 000 does not stop root's reads

# The kinds of path a command can be handed where it expects a file to read.
INPUT_KINDS = ["file", "empty", "dir", "fifo", "missing", "loop", "long", "notdir"]
INPUT_KINDS += [] if ROOT else ["unreadable"]
# ... and where it writes one: (kind, previous content).
OUTPUT_KINDS = ["absent", "file", "dir", "fifo", "nofolder", "loop", "long"]

# Files of fixed content, for the odd-file test (the property tests draw their own).
CONTENTS = {
    "big": BIG_LINE,
    "nul": b"\0" * 1000,
    "not-utf8": b"caf\xe9 \xff\xfe\n",
    "random": random.Random(0).randbytes(4096),
    "beyond-json": b"u1\thello\t[" + HUGE_INT + b"]\n" + DEEP,
}

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the model kept out --------------------------------------------------------------


class FakeTranscriber:
    """Decodes the recording as ``Transcriber`` does, then makes up its text."""

    def __init__(self, model=None, options=None, model_options=None) -> None:
        self.resolved = ResolvedModel(name="fake", path="fake")

    def transcribe(self, audio, terms=(), progress=None, document=None):
        probe(audio)
        samples = sum(len(block) for block in stream_audio(audio))
        return Transcript(text="words", segments=(), duration=samples / SAMPLE_RATE,
                          model="fake", language="en",
                          context_used=tuple(t.text for t in terms))  # fmt: skip


def local_engine(tasks, setup, workers):
    fake = FakeTranscriber()
    for task in tasks:
        yield transcribe_row(fake, task)


@pytest.fixture(scope="module", autouse=True)
def no_model() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ctxasr.transcribe, "Transcriber", FakeTranscriber)
        patch.setattr(job_module, "_engine", lambda options: local_engine)
        patch.delenv("CTXASR_DEBUG", raising=False)
        yield


# --- files ---------------------------------------------------------------------------


@contextmanager
def folder() -> Iterator[Path]:
    """A fresh folder for one example, with a recording that decodes."""
    with tempfile.TemporaryDirectory(prefix="bad-input-") as name:
        path = Path(name)
        (path / "good.wav").write_bytes(WAV)
        try:
            yield path
        finally:
            for p in path.rglob("*"):  # let the clean-up in
                if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) == 0:
                    p.chmod(0o700)


def make_input(where: Path, name: str, kind: str, content: bytes = b"") -> str:
    """A path of ``kind`` for a command to read; ``content`` for a file."""
    p = where / name
    if kind == "file":
        p.write_bytes(content)
    elif kind in CONTENTS:
        p.write_bytes(CONTENTS[kind])
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "dir":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "loop":
        p.symlink_to(p.name)
    elif kind == "long":
        return str(where / ("x" * 300 + p.suffix))
    elif kind == "notdir":
        (where / (name + ".f")).write_bytes(content)
        return str(where / (name + ".f") / name)
    elif kind == "unreadable":
        p.write_bytes(content)
        p.chmod(0)
    else:
        assert kind == "missing", kind
    return str(p)


def make_output(where: Path, name: str, kind: str, content: bytes) -> str:
    """A path of ``kind`` for a command to write to."""
    if kind == "absent":
        return str(where / name)
    if kind == "nofolder":
        return str(where / "no-such-folder" / name)
    return make_input(where, name, kind, content)


def snapshot(path: str) -> object:
    """What is at ``path``, to compare before and after a command."""
    p = Path(path)
    try:
        info = p.lstat()
    except OSError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return ("link", os.readlink(p))
    if stat.S_ISDIR(info.st_mode):
        return ("dir", sorted(os.listdir(p)))
    if stat.S_ISFIFO(info.st_mode):
        return "fifo"
    return p.read_bytes()


# --- running a command ---------------------------------------------------------------


def invoke(args: list[str], where: Path):
    """``ctxasr ARGS`` in a thread; fails the test if it does not end in time."""
    box = {}

    def run() -> None:
        box["result"] = CliRunner().invoke(app, args)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_S)
    if thread.is_alive():
        for _ in range(10):  # give every FIFO a writer that closes: the reads see EOF
            for p in where.rglob("*"):
                if stat.S_ISFIFO(p.lstat().st_mode):
                    try:
                        os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))
                    except OSError:
                        pass
            thread.join(1)
        pytest.fail(f"ctxasr {' '.join(args)}: still running after {HANG_S} s (a FIFO read?)")
    return box["result"]


def check(result, args: list[str], outputs: dict[str, object]) -> None:
    """The contract: exit 0, or one error line and exit 1 (2: click's usage error);
    no traceback; on failure every output as it was."""
    shown = f"ctxasr {' '.join(a[:100] for a in args)}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(*result.exc_info))
        pytest.fail(f"{shown}: raised\n{trace}")
    code, err = result.exit_code, result.stderr
    if currently_in_test_context():  # --hypothesis-show-statistics: how often each came up
        event(f"exit {code}")
    assert code in (0, 1, 2), f"{shown}: exit {code}\n{err}"
    assert "Traceback" not in err, f"{shown}:\n{err}"
    if code == 1:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("ctxasr: error: "), f"{shown}:\n{err}"
        assert "CTXASR_DEBUG" not in lines[0], f"{shown}: an exception no one expected: {err}"
    elif code == 2:
        assert "Usage: " in err and "Error" in err, f"{shown}:\n{err}"
    if code != 0:
        for path, before in outputs.items():
            assert snapshot(path) == before, f"{shown}: {path} changed by a failed run"
    for path in outputs:
        parent = Path(path).parent
        if parent.is_dir():  # atomic_write's temporary file does not outlive the command
            assert not [n for n in os.listdir(parent) if n.startswith(".")], f"{shown}: {parent}"


# --- contents ------------------------------------------------------------------------


def without_newlines(data: bytes) -> bytes:
    return data.replace(b"\n", b" ")


def named(values: dict[str, bytes]) -> st.SearchStrategy[bytes]:
    """One of ``values``, shown by its name (a 10 MB repr helps no one)."""
    return st.sampled_from(sorted(values)).map(values.__getitem__)


bad_bytes = st.one_of(
    st.binary(max_size=2048),
    st.binary(max_size=256).map(lambda b: b + b"\xff\xfe"),  # not UTF-8
    st.integers(1, 4096).map(lambda n: b"\0" * n),
    st.text(max_size=300).map(lambda t: t.encode("utf-8")),
    named(
        {
            "empty": b"",
            "10 MB line": BIG_LINE,
            "10 MB, no newline": BIG_LINE[:-1],
            "BOM": b"\xef\xbb\xbf",
            "CRLFs": b"\r\n\r\n",
        }
    ),
)
# ... and JSON that json.loads refuses with other errors than its syntax errors.
beyond_json = named(
    {
        "huge int": HUGE_INT,
        "deep": DEEP,
        "[huge int]": b"[" + HUGE_INT + b"]",
        '{"a": huge int}': b'{"a": ' + HUGE_INT + b"}",
    }
)
bad_json_bytes = st.one_of(bad_bytes, beyond_json)
# Recordings: garbage, and real recordings cut short or with garbage after the header.
audio_bytes = st.one_of(
    bad_bytes,
    st.tuples(st.integers(0, len(WAV)), st.binary(max_size=512)).map(lambda t: WAV[: t[0]] + t[1]),
    st.tuples(st.integers(0, len(FLAC_HEAD)), st.binary(max_size=512)).map(
        lambda t: FLAC_HEAD[: t[0]] + t[1]
    ),
)
words = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=12)
term_list_bytes = st.one_of(
    bad_bytes,
    st.lists(
        st.tuples(
            words,
            st.one_of(st.none(), words, st.sampled_from(["0", "-1", "nan", "inf", "1e999"])),
        ),
        max_size=5,
    ).map(
        lambda rows: "".join(
            t if w is None else f"{t}\t{w}" for t, w in rows + [("", None)]
        ).encode("utf-8", "surrogatepass")
    ),
    st.sampled_from([b"# only a comment\n", b"\t2\n", b"a\t0\n"]),
    beyond_json,
)
# What a manifest row may name as a file, relative to the manifest's folder.
row_paths = st.one_of(
    st.sampled_from(["missing.wav", "fifo", "dir", "empty", "junk", "good.wav", "loop",
                     "junk/x", "x" * 300, "~/no-such-file.wav", "", " ", "\ud800.wav"]),
    words,
)  # fmt: skip
json_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), words,
    st.lists(words, max_size=3), st.dictionaries(words, words, max_size=2),
)  # fmt: skip
context_entries = st.lists(
    st.one_of(words, st.fixed_dictionaries({"text": words}, optional={"weight": json_values}),
              json_values),
    max_size=4,
)  # fmt: skip
manifest_rows = st.fixed_dictionaries(
    {},
    optional={
        "audio_filepath": st.one_of(row_paths, json_values),
        "audio": st.one_of(row_paths, json_values),
        "text": st.one_of(words, json_values),
        "context": st.one_of(context_entries, json_values),
        "context_file": st.one_of(row_paths, json_values),
        "duration": st.one_of(st.floats(), json_values),
        "id": st.one_of(words, st.integers(), json_values),
        "rare_words": st.one_of(st.lists(words, max_size=3), json_values),
    },
)
# Rows that read, to get past the manifest to the files it names.
plausible_rows = st.fixed_dictionaries(
    {"audio_filepath": row_paths, "text": words},
    optional={
        "context": context_entries,
        "context_file": row_paths,
        "duration": st.floats(0, 100),
        "id": words,
    },
)
manifest_line = st.one_of(
    st.one_of(manifest_rows, plausible_rows).map(lambda row: json.dumps(row).encode("utf-8")),
    bad_bytes.map(without_newlines),
    beyond_json.map(without_newlines),
    st.sampled_from([b"", b"   ", b"[]", b"null", b'"audio"', b"{}", b"{"]),
)
manifest_bytes = st.one_of(
    st.lists(manifest_line, max_size=6).map(lambda lines: b"".join(x + b"\n" for x in lines)),
    bad_json_bytes,
)
tsv_field = st.one_of(
    words,
    st.sampled_from(['["a", "b"]', "[]", '["x"', "[1]", "{}", "null", '"a"', '["\\ud800"]']),
    beyond_json.map(bytes.decode),
    st.lists(words, max_size=3).map(json.dumps),
)
tsv_line = st.one_of(
    st.lists(tsv_field, min_size=1, max_size=5).map(lambda fs: "\t".join(fs).encode("utf-8")),
    bad_bytes.map(without_newlines),
)
tsv_bytes = st.one_of(
    st.lists(tsv_line, max_size=5).map(lambda lines: b"".join(x + b"\n" for x in lines)),
    bad_json_bytes,
)
input_kinds = st.sampled_from(INPUT_KINDS)
# Mostly a path a command may write, so that it goes on to read the rest of its input.
WRITABLE = ["absent"] * 4 + ["file"] * 2 + OUTPUT_KINDS
output_kinds = st.sampled_from(WRITABLE)


def some_input(
    content: st.SearchStrategy[bytes], kinds: list[str] = INPUT_KINDS
) -> st.SearchStrategy[tuple[str, bytes]]:
    """(kind, content): mostly files, sometimes a folder, FIFO or missing path."""
    return st.tuples(st.sampled_from(["file"] * len(kinds) + kinds), content)


# Not yet for manifests: ctxasr.manifest does not survive a name too long (on 3.11).
MANIFEST_KINDS = [k for k in INPUT_KINDS if k != "long"]


def optional_input(content: st.SearchStrategy[bytes]):
    return st.one_of(st.none(), some_input(content))


# --- the commands --------------------------------------------------------------------


@SETTINGS
@given(
    audio=st.one_of(st.just(("good", b"")), some_input(audio_bytes)),
    context=optional_input(term_list_bytes),
    text=optional_input(bad_bytes),
    keywords=st.one_of(st.none(), words, st.just(",, ,")),
    output=st.tuples(output_kinds, st.binary(max_size=64)),
    output_format=st.sampled_from(["text", "json", "srt"]),
)
def test_transcribe(audio, context, text, keywords, output, output_format):
    with folder() as where:
        kind, content = audio
        path = (
            str(where / "good.wav") if kind == "good" else make_input(where, "a.wav", kind, content)
        )
        args = ["transcribe", path, "--format", output_format, "-q"]
        if context is not None:
            args += ["--context", make_input(where, "terms.txt", *context)]
        if text is not None:
            args += ["--context-text", make_input(where, "notes.txt", *text)]
        if keywords is not None:
            args += ["--keywords", keywords]
        out = make_output(where, "out.txt", *output)
        args += ["-o", out]
        before = {out: snapshot(out)}
        result = invoke(args, where)
        check(result, args, before)
        if result.exit_code == 0 and output_format != "srt":  # srt: no segments, no text
            assert Path(out).read_text(encoding="utf-8").strip(), "an empty transcript"


@SETTINGS
@given(
    manifest=some_input(manifest_bytes, MANIFEST_KINDS),
    refs=some_input(tsv_bytes),
    tsv=st.booleans(),
    audio_dir=input_kinds,
    condition=st.sampled_from([None, "none", "context", "oracle", "bogus"]),
)
def test_eval(manifest, refs, tsv, audio_dir, condition):
    with folder() as where:
        path = (
            make_input(where, "refs.tsv", *refs) if tsv else make_input(where, "m.jsonl", *manifest)
        )
        args = ["eval", path, "--output-dir", str(where / "eval-out"), "-q"]
        if tsv:
            args += ["--audio-dir", make_input(where, "audio", audio_dir)]
        if condition is not None:
            args += ["--condition", condition]
        check(invoke(args, where), args, {str(where / "eval-out"): None})


@SETTINGS
@given(refs=some_input(tsv_bytes), hyps=some_input(tsv_bytes),
       normalize=st.sampled_from(["none", "whisper"]))  # fmt: skip
def test_score(refs, hyps, normalize):
    with folder() as where:
        args = ["score", "--refs", make_input(where, "refs.tsv", *refs),
                "--hyps", make_input(where, "hyps.tsv", *hyps), "--normalize", normalize]  # fmt: skip
        check(invoke(args, where), args, {})


@SETTINGS
@given(
    manifest=some_input(manifest_bytes, MANIFEST_KINDS),
    output=st.tuples(st.sampled_from([*WRITABLE, "manifest"]), bad_json_bytes),
    context=optional_input(term_list_bytes),
    keywords=st.one_of(st.none(), words),
    retry=st.booleans(),
)
def test_batch(manifest, output, context, keywords, retry):
    with folder() as where:
        path = make_input(where, "m.jsonl", *manifest)
        kind, content = output
        out = path if kind == "manifest" else make_output(where, "out.jsonl", kind, content)
        args = ["batch", path, "-o", out, "-q", *(["--retry-errors"] if retry else [])]
        if context is not None:
            args += ["--context", make_input(where, "terms.txt", *context)]
        if keywords is not None:
            args += ["--keywords", keywords]
        before = {out: snapshot(out)}
        result = invoke(args, where)
        check(result, args, before)
        assert not list(where.rglob("*.lock")), "the lock outlived the job"
        if result.exit_code == 0:
            data = Path(out).read_bytes()
            assert data.endswith(b"\n"), "a torn last row"
            rows = [json.loads(x) for x in data.split(b"\n")[:-1]]
            lines = [r["manifest_line"] for r in rows]
            assert sorted(lines) == [t.line for t in read_tasks(path)], "not every row once"
            for row in rows:
                assert not row.get("error", "").startswith("unexpected"), row


@SETTINGS
@given(
    refs=some_input(tsv_bytes),
    pool=some_input(st.one_of(bad_bytes, st.lists(words).map(lambda w: "\n".join(w).encode()))),
    n=st.integers(0, 3),
    output=st.tuples(st.sampled_from([*WRITABLE, "refs"]), st.binary(max_size=64)),
    shuffle=st.booleans(),
)
def test_data_biasing_lists(refs, pool, n, output, shuffle):
    with folder() as where:
        refs_path = make_input(where, "refs.tsv", *refs)
        kind, content = output
        out = refs_path if kind == "refs" else make_output(where, "out.tsv", kind, content)
        args = ["data", "biasing-lists", "--refs", refs_path,
                "--pool", make_input(where, "pool.txt", *pool), "-n", str(n), "-o", out,
                *(["--shuffle"] if shuffle else [])]  # fmt: skip
        check(invoke(args, where), args, {out: snapshot(out)})


@pytest.mark.parametrize(
    "line", [HUGE_INT, DEEP, b'{"audio": "a.wav", "duration": ' + HUGE_INT + b"}"]
)
@pytest.mark.parametrize("command", ["eval", "batch"])
def test_manifest_json_beyond_what_json_reads(command, line):
    with folder() as where:
        manifest = where / "m.jsonl"
        manifest.write_bytes(json.dumps({"audio": "good.wav", "text": "x"}).encode() + b"\n" + line)
        out = str(where / "out")
        args = [command, str(manifest), "-o", out, "-q"]
        result = invoke(args, where)
        check(result, args, {out: None})
        assert result.exit_code == (1 if command == "eval" else 0)  # batch: an error row


# --- every odd file in every place ---------------------------------------------------

# (command line with {} for the odd path, whether it is an output)
PLACES = {
    "transcribe audio": (["transcribe", "{}", "-q"], False),
    "transcribe --context": (["transcribe", "{good}", "--context", "{}", "-q"], False),
    "transcribe --context-text": (["transcribe", "{good}", "--context-text", "{}", "-q"], False),
    "transcribe -o": (["transcribe", "{good}", "-o", "{}", "-q"], True),
    "eval manifest": (["eval", "{}", "-o", "{where}/eval-out", "-q"], False),
    "eval --audio-dir": (["eval", "{refs}", "--audio-dir", "{}", "-o", "{where}/e", "-q"], False),
    "score --refs": (["score", "--refs", "{}", "--hyps", "{hyps}"], False),
    "score --hyps": (["score", "--refs", "{refs}", "--hyps", "{}"], False),
    "batch manifest": (["batch", "{}", "-o", "{where}/out.jsonl", "-q"], False),
    "batch -o": (["batch", "{manifest}", "-o", "{}", "-q"], True),
    "batch --context": (["batch", "{manifest}", "-o", "{where}/o.jsonl", "-c", "{}", "-q"], False),
    "batch --context-text": (["batch", "{manifest}", "-o", "{where}/o.jsonl", "--context-text", "{}",
                              "-q"], False),
    "data --refs": (["data", "biasing-lists", "--refs", "{}", "--pool", "{pool}", "-n", "1",
                     "-o", "{where}/o.tsv"], False),
    "data --pool": (["data", "biasing-lists", "--refs", "{refs}", "--pool", "{}", "-n", "1",
                     "-o", "{where}/o.tsv"], False),
    "data -o": (["data", "biasing-lists", "--refs", "{refs}", "--pool", "{pool}", "-n", "1",
                 "-o", "{}"], True),
}  # fmt: skip
SUFFIX = {"transcribe audio": ".wav", "eval manifest": ".jsonl", "batch manifest": ".jsonl",
          "batch -o": ".jsonl"}  # fmt: skip
# What no command may read, and what it may not write to.
REFUSED_IN = {"fifo", "dir", "missing", "long", "notdir", "unreadable", "loop"}
REFUSED_OUT = {"fifo", "dir", "long", "notdir", "nofolder", "loop"}


def odd_cases() -> Iterator[object]:
    """(place, kind): inputs get odd paths and odd contents (random ones are the property
    tests' work), outputs odd paths."""
    for place, (_, is_output) in PLACES.items():
        kinds = [*OUTPUT_KINDS, "empty", "notdir"] if is_output else [*INPUT_KINDS, *CONTENTS]
        for kind in kinds:
            if kind == "file" and not is_output:
                continue
            yield pytest.param(place, kind, id=f"{place}-{kind}")


@pytest.mark.parametrize(("place", "kind"), list(odd_cases()))
def test_every_odd_file_in_every_place(place, kind):
    template, is_output = PLACES[place]
    with folder() as where:
        (where / "refs.tsv").write_text('u1\thello there\t["there"]\n')
        (where / "hyps.tsv").write_text("u1\thello\n")
        (where / "pool.txt").write_text("alpha\nbeta\n")
        (where / "m.jsonl").write_text(json.dumps({"audio": "good.wav"}) + "\n")
        maker = make_output if is_output else make_input
        odd = maker(where, "odd" + SUFFIX.get(place, ".txt"), kind, b"old")
        names = {"good": str(where / "good.wav"), "where": str(where), "refs": str(where / "refs.tsv"),
                 "hyps": str(where / "hyps.tsv"), "pool": str(where / "pool.txt"),
                 "manifest": str(where / "m.jsonl")}  # fmt: skip
        args = [odd if a == "{}" else a.format(**names) for a in template]
        outputs = {odd: snapshot(odd)} if is_output else {}
        result = invoke(args, where)
        check(result, args, outputs)
        if kind in (REFUSED_OUT if is_output else REFUSED_IN):
            assert result.exit_code in (1, 2), f"{place} {kind}: exit {result.exit_code}"


# A document that is binary (a NUL byte among the text) or not UTF-8: the file named,
# nothing transcribed, whichever command reads it.
BAD_DOCUMENTS = {
    "binary": (b"Kubernetes and etcd\0\0\x01\x02 slides\n", "is a binary file, not text"),
    "not-utf8": (
        "Zürich, Müller\n".encode("latin-1"),
        "is not UTF-8 text (invalid byte at offset 1)",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_DOCUMENTS))
@pytest.mark.parametrize("command", ["transcribe", "batch"])
def test_a_context_text_that_is_not_text_is_one_line_naming_the_file(command, kind):
    content, problem = BAD_DOCUMENTS[kind]
    with folder() as where:
        (where / "m.jsonl").write_text(json.dumps({"audio": "good.wav"}) + "\n")
        doc = where / "slides.txt"
        doc.write_bytes(content)
        if command == "transcribe":
            args = ["transcribe", str(where / "good.wav")]
        else:
            args = ["batch", str(where / "m.jsonl"), "-o", str(where / "out.jsonl")]
        args += ["--context-text", str(doc), "-q"]
        result = invoke(args, where)
        check(result, args, {})
        assert result.exit_code == 1, result.stderr
        assert result.stderr == f"ctxasr: error: {doc}: {problem}\n"
        assert not (where / "out.jsonl").exists()


# --- as a user runs it ---------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        ["transcribe", "{good}", "--context", "{fifo}"],
        ["score", "--refs", "{fifo}", "--hyps", "{fifo}"],
        ["batch", "{manifest}", "-o", "{fifo}"],
    ],
)
def test_a_fifo_in_a_real_process(template):
    """The real command, in its own process: no hang, one line, exit 1."""
    with folder() as where:
        os.mkfifo(where / "fifo")
        (where / "m.jsonl").write_text(json.dumps({"audio": "good.wav"}) + "\n")
        names = {"good": where / "good.wav", "fifo": where / "fifo", "manifest": where / "m.jsonl"}
        args = [a.format(**names) for a in template]
        env = {k: v for k, v in os.environ.items() if k != "CTXASR_DEBUG"}
        proc = subprocess.run([sys.executable, "-m", "ctxasr.cli", *args], capture_output=True,
                              text=True, env=env, timeout=60, check=False)  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"ctxasr: error: {where / 'fifo'}: is not a regular file")
        assert stat.S_ISFIFO((where / "fifo").lstat().st_mode)  # left as it was


def test_a_binary_context_text_in_a_real_process():
    """The real command, in its own process: one line naming the file, exit 1."""
    with folder() as where:
        doc = where / "slides.pdf"
        doc.write_bytes(b"%PDF-1.7\n\0\0binary")
        env = {k: v for k, v in os.environ.items() if k != "CTXASR_DEBUG"}
        args = ["transcribe", str(where / "good.wav"), "--context-text", str(doc)]
        proc = subprocess.run([sys.executable, "-m", "ctxasr.cli", *args], capture_output=True,
                              text=True, env=env, timeout=60, check=False)  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr == f"ctxasr: error: {doc}: is a binary file, not text\n"
        assert proc.stdout == ""
