"""One manifest reader for eval and batch: each case read by both, which must agree.

Evaluation (``ctxasr.eval.manifest.read_manifest``) stops at a malformed row, naming
``file:line``; a batch job (``ctxasr.batch.rows.read_tasks``) records the same message
as the row's error. Good rows give both the same audio, terms and weights.
"""

from __future__ import annotations

import gzip
import io
import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxasr.batch.rows import Task, read_tasks
from ctxasr.context.terms import ContextTerm, dedupe_terms
from ctxasr.errors import CtxasrError
from ctxasr.eval.manifest import EvalItem, read_manifest
from ctxasr.eval.tsv import format_ref_line, read_biasing_lists, read_hyps, read_refs
from ctxasr.manifest import numbered_lines, read_manifest_rows


def write(path: Path, *lines: str | dict, end: str = "\n", bom: bool = False) -> Path:
    text = "".join((ln if isinstance(ln, str) else json.dumps(ln)) + end for ln in lines)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def good(manifest: Path) -> tuple[list[EvalItem], list[Task]]:
    """Both readers' rows of a manifest without errors, checked to agree."""
    items, tasks = read_manifest(manifest), read_tasks(manifest)
    assert [t.error for t in tasks] == [None] * len(tasks)
    assert [str(i.audio) for i in items] == [t.audio for t in tasks]
    assert [i.terms for i in items] == [t.terms for t in tasks]
    assert [i.context_text for i in items] == [t.document for t in tasks]
    assert [r.line for r in read_manifest_rows(manifest)] == [t.line for t in tasks]
    return items, tasks


def bad(manifest: Path, line: int, problem: str) -> str:
    """Eval raises naming ``manifest:line``; batch records the same message on that row."""
    with pytest.raises(CtxasrError) as err:
        read_manifest(manifest)
    assert err.value.source == f"{manifest}:{line}" and problem in err.value.problem
    (task,) = [t for t in read_tasks(manifest) if t.error is not None]
    assert task.line == line and task.audio is None
    assert task.error == str(err.value) and "\n" not in task.error
    return task.error


def test_context_and_context_file_are_merged_in_order(tmp_path):
    (tmp_path / "terms.txt").write_text("Kubernetes\t2\netcd\nquilter\t3\n")
    manifest = write(
        tmp_path / "m.jsonl",
        {
            "audio_filepath": "a.wav",
            "text": "t",
            "context_file": "terms.txt",
            "context": ["Quilter", {"text": "  Birket   Foster ", "weight": 1.5}, "kubernetes"],
        },
    )
    ((item,), (task,)) = good(manifest)
    # context first, then the file's; a repeat keeps the first spelling, the top weight
    assert task.terms == (
        ContextTerm("Quilter", 3.0),
        ContextTerm("Birket Foster", 1.5),
        ContextTerm("kubernetes", 2.0),
        ContextTerm("etcd"),
    )
    assert item.context == ("Quilter", "Birket Foster", "kubernetes", "etcd")
    assert item.weights == (3.0, 1.5, 2.0, 1.0)


def test_weights_of_one_leave_an_items_weights_empty(tmp_path):
    manifest = write(
        tmp_path / "m.jsonl",
        {"audio": "a.wav", "text": "t", "context": ["a", {"text": "b", "weight": 1}]},
    )
    ((item,), _) = good(manifest)
    assert item == EvalItem("a", tmp_path / "a.wav", "t", ("a", "b"))
    assert item.terms == (ContextTerm("a"), ContextTerm("b"))


def test_home_is_expanded_in_audio_and_context_file(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "lists").mkdir(parents=True)
    (home / "lists" / "t.txt").write_text("Linnell\t2\n")
    monkeypatch.setenv("HOME", str(home))
    manifest = write(
        tmp_path / "m.jsonl",
        {"audio_filepath": "~/rec/a.wav", "text": "t", "context_file": "~/lists/t.txt"},
    )
    ((item,), (task,)) = good(manifest)
    assert item.audio == home / "rec" / "a.wav" and task.audio == str(home / "rec" / "a.wav")
    assert task.terms == (ContextTerm("Linnell", 2.0),) and item.weights == (2.0,)
    assert task.key == "~/rec/a.wav"  # a batch row's identity is the path as written


def test_relative_paths_are_relative_to_the_manifests_folder(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "m.jsonl", {"audio": "a.wav", "text": "t"})
    monkeypatch.chdir(tmp_path)
    (item,), _ = good(Path("sub/m.jsonl"))
    assert item.audio == tmp_path / "sub" / "a.wav" and item.audio.is_absolute()


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_bom_crlf_and_blank_lines(tmp_path, end):
    manifest = write(
        tmp_path / "m.jsonl",
        {"audio": "a.wav", "text": "one"},
        "",
        "  \t",
        {"audio": "b.wav", "text": "two"},
        "",
        end=end,
        bom=True,
    )
    items, tasks = good(manifest)
    assert [i.text for i in items] == ["one", "two"] and [t.line for t in tasks] == [1, 4]
    write(manifest, "", {"audio": "a.wav", "text": "one"}, "[]", end=end, bom=True)
    bad(manifest, 3, "is not a JSON object")  # a BOM before a blank first line


def test_unicode_line_separators_stay_inside_their_row(tmp_path):
    text = "a\u2028b\u2029c\x85d\x1ce\x0bf"
    manifest = write(
        tmp_path / "m.jsonl",
        json.dumps({"audio": "a.wav", "text": text}, ensure_ascii=False),
        {"audio": "b.wav", "text": "two"},
        "not json",
    )
    assert manifest.read_bytes().count(b"\n") == 3 and len(manifest.read_text().splitlines()) > 3
    message = bad(manifest, 3, "is not JSON")
    assert message.startswith(f"{manifest}:3: ")
    first = read_manifest_rows(manifest)[0]
    assert first.line == 1 and first.text == text


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('"a.wav"', "is not a JSON object"),
        ({"text": "no audio"}, "needs a string field 'audio_filepath' (or 'audio')"),
        ({"audio_filepath": " ", "text": "t"}, "needs a string field 'audio_filepath'"),
        (
            {"audio": "a.wav", "text": "t", "context_file": "missing.txt"},
            "missing.txt: no such file",
        ),
        ({"audio": "a.wav", "text": "t", "context_file": ""}, "'context_file' must be a path"),
        (
            {"audio": "a.wav", "text": "t", "context_text_file": "doc.txt"},
            "context_text_file ",  # then the path and "no such file"
        ),
        (
            {"audio": "a.wav", "text": "t", "context_text_file": 3},
            "'context_text_file' must be a path",
        ),
        ({"audio": "a.wav", "text": "t", "context_text": ["a"]}, "'context_text' must be a string"),
        ({"audio": "a.wav", "text": "t", "context": "a, b"}, "'context' must be a list of strings"),
        (
            {"audio": "a.wav", "text": "t", "context": [{"text": "a", "weight": 0}]},
            "weight 0 must be a positive number",
        ),
        (
            {"audio": "a.wav", "text": "t", "context": [{"text": "a", "wieght": 2}]},
            "'context' must be a list of strings",
        ),
        ({"audio": "a.wav", "text": "t", "rare_words": "quilter"}, "'rare_words' must be a list"),
        ({"audio": "a.wav", "text": 5}, "'text' must be a string"),
        ({"audio": "a.wav", "text": "t", "duration": "1.5"}, "'duration' must be a number"),
        ({"audio": "a.wav", "text": "t", "id": ["x"]}, "'id' must be a string"),
    ],
)
def test_a_malformed_row_stops_eval_and_is_an_error_row_in_batch(tmp_path, line, problem):
    manifest = write(tmp_path / "m.jsonl", {"audio": "ok.wav", "text": "ok"}, "", line)
    message = bad(manifest, 3, problem)
    assert message.startswith(f"{manifest}:3: ")


def test_invalid_utf8_spoils_only_its_row(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b'{"audio": "a.wav", "text": "t"}\n{"audio": "\xff.wav", "text": "t"}\n')
    bad(manifest, 2, "is not UTF-8")


def test_a_missing_text_is_an_error_for_eval_only(tmp_path):
    manifest = write(tmp_path / "m.jsonl", {"audio": "a.wav"})
    with pytest.raises(CtxasrError, match="needs a string field 'text'") as err:
        read_manifest(manifest)
    assert err.value.source == f"{manifest}:1"
    assert read_tasks(manifest)[0].error is None


def test_nulls_count_as_absent(tmp_path):
    manifest = write(
        tmp_path / "m.jsonl",
        {
            "audio": "a.wav",
            "text": "t",
            "context": None,
            "context_file": None,
            "rare_words": None,
            "duration": None,
            "id": None,
        },
    )
    ((item,), (task,)) = good(manifest)
    assert item.id == "a" and item.rare_words is None and item.duration is None
    assert task.terms == ()


def test_a_context_file_is_read_once(tmp_path, monkeypatch):
    import ctxasr.manifest as mod

    (tmp_path / "t.txt").write_text("Quilter\n")
    calls = []
    real = mod.read_term_file
    monkeypatch.setattr(mod, "read_term_file", lambda p: calls.append(p) or real(p))
    rows = [{"audio": f"{i}.wav", "text": "t", "context_file": "t.txt"} for i in range(3)]
    manifest = write(
        tmp_path / "m.jsonl",
        *rows,
        {"audio": "x.wav", "context_file": "no.txt"},
        {"audio": "y.wav", "context_file": "no.txt"},
    )
    assert len(read_tasks(manifest)) == 5 and len(calls) == 2


@pytest.mark.parametrize(
    ("make", "eval_problem", "batch_problem"),
    [
        (lambda p: p / "missing.jsonl", "no such file", "no such file"),
        (lambda p: p, "is not a file", "is not a file"),
        (lambda p: write(p / "empty.jsonl", "", " ", bom=True), "has no utterance", "has no rows"),
    ],
)
def test_an_unusable_manifest_is_fatal_for_both(tmp_path, make, eval_problem, batch_problem):
    manifest = make(tmp_path)
    with pytest.raises(CtxasrError, match=eval_problem):
        read_manifest(manifest)
    with pytest.raises(CtxasrError, match=batch_problem):
        read_tasks(manifest)


def test_numbered_lines():
    data = b"\xef\xbb\xbfa\r\n\n \nb\xe2\x80\xa8c\rd\nlast"
    assert list(numbered_lines(io.BytesIO(data))) == [
        (1, b"a"),
        (4, b"b\xe2\x80\xa8c\rd"),
        (5, b"last"),
    ]


# --- documents: context_text and context_text_file ------------------------------------


def test_a_document_inline_from_a_file_or_both(tmp_path):
    (tmp_path / "doc.txt").write_bytes(b"\xef\xbb\xbfThe Kubernetes talk.\nQuilter spoke.\n")
    manifest = write(
        tmp_path / "m.jsonl",
        {"audio": "a.wav", "text": "t", "context_text_file": "doc.txt"},
        {"audio": "b.wav", "text": "t", "context_text": "Birket and Linnell"},
        {
            "audio": "c.wav",
            "text": "t",
            "context_text": "Birket.\n",
            "context_text_file": "doc.txt",
        },
        {"audio": "d.wav", "text": "t", "context_text": " \n", "context": ["x"]},
        {"audio": "e.wav", "text": "t", "context_text": None, "context_text_file": None},
    )
    items, tasks = good(manifest)
    assert [i.context_text for i in items] == [
        "The Kubernetes talk.\nQuilter spoke.\n",  # the BOM dropped, the text as it is
        "Birket and Linnell",
        "Birket.\n\nThe Kubernetes talk.\nQuilter spoke.",  # inline, a blank line, the file
        None,  # blank text is none
        None,
    ]
    assert tasks[1].document == "Birket and Linnell"
    assert all("context_text" not in dict(i.extra) for i in items)


def test_a_documents_terms_follow_the_rows_own(tmp_path):
    manifest = write(
        tmp_path / "m.jsonl",
        {"audio": "a.wav", "text": "t", "context": ["Quilter", "zebra"],
         "context_text": "Mister Quilter met Birket Linnell about Kubernetes."},
        {"audio": "b.wav", "text": "t", "context_text": "the cat sat on the mat"},
    )  # fmt: skip
    (first, second), _ = good(manifest)
    assert first.context[:2] == ("Quilter", "zebra")  # own terms first, at weight 1
    assert first.weights[:2] == (1.0, 1.0) and "Kubernetes" in first.context[2:]
    assert max(first.weights[2:]) <= 0.5  # extracted: weighted below listed terms
    assert [t.casefold() for t in first.context].count("quilter") == 1
    # No rare word, name or acronym: no terms, but the document still goes along.
    assert second.context == () and second.context_text == "the cat sat on the mat"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"%PDF-1.7\n\x00\x01binary", "is a binary file, not text"),
        ("Birket\n".encode("utf-16"), "is a binary file, not text"),
        ("caf\u00e9\n".encode("latin-1"), "is not UTF-8 text (invalid byte at offset 3)"),
    ],
)
def test_a_document_that_is_not_text_is_a_malformed_row(tmp_path, data, problem):
    (tmp_path / "doc.pdf").write_bytes(data)
    manifest = write(tmp_path / "m.jsonl", {"audio": "a.wav", "text": "t",
                                            "context_text_file": "doc.pdf"})  # fmt: skip
    message = bad(manifest, 1, problem)
    assert message == f"{manifest}:1: context_text_file {tmp_path / 'doc.pdf'}: {problem}"


def test_a_missing_document_names_its_path(tmp_path):
    manifest = write(tmp_path / "m.jsonl", {"audio": "a.wav", "context_text_file": "no.txt"})
    (task,) = read_tasks(manifest)
    assert task.error == f"{manifest}:1: context_text_file {tmp_path / 'no.txt'}: no such file"


def test_a_large_document_is_read_once_and_quickly(tmp_path, monkeypatch):
    import ctxasr.manifest as mod

    line = "Quilter and Birket discussed the Kubernetes cluster at length.\n"
    (tmp_path / "book.txt").write_text(line * (1_000_000 // len(line)), encoding="utf-8")
    calls = []
    real = mod.read_text_file
    monkeypatch.setattr(mod, "read_text_file", lambda p: calls.append(p) or real(p))
    rows = [{"audio": f"{i}.wav", "text": "t", "context_text_file": "book.txt"} for i in range(50)]
    manifest = write(tmp_path / "m.jsonl", *rows)
    start = time.perf_counter()
    items = read_manifest(manifest)
    assert time.perf_counter() - start < 5.0  # about 0.1 s: read once, terms extracted once
    assert len(calls) == 1 and len(items[0].context_text) > 999_000
    assert items[0].context_text is items[-1].context_text  # one string, not 50 copies
    assert "Kubernetes" in items[0].context


# --- property: random manifests read back the same way by both -----------------------

_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12
)  # any character, separators and controls included
_term = st.text(st.characters(codec="utf-8", categories=("L", "N", "Zs")), min_size=1, max_size=8)
_weight = st.sampled_from([1, 1.0, 0.5, 2, 3.25])
_entry = st.one_of(_term, st.builds(lambda t, w: {"text": t, "weight": w}, _term, _weight))
_row = st.fixed_dictionaries(
    {
        "audio_filepath": st.from_regex(r"[a-z]{1,6}(/[a-z]{1,6})?\.wav", fullmatch=True),
        "text": _text,
    },
    optional={
        "context": st.lists(_entry, max_size=4),
        "speaker": _text,
        "duration": st.floats(0, 1e4),
        "use_file": st.booleans(),
    },
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(_row, st.integers(0, 2)), min_size=1, max_size=5),
    end=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
    ascii_only=st.booleans(),
)
def test_random_manifests_read_back_alike(tmp_path, rows, end, bom, ascii_only):
    (tmp_path / "t.txt").write_text("Quilter\t2\nzebra\n")
    lines: list[str] = []
    expected = []  # (line number, row as written)
    for i, (row, blanks) in enumerate(rows):
        row = {**row, "id": f"u{i}"}
        if row.pop("use_file", False):
            row["context_file"] = "t.txt"
        lines += [""] * blanks + [json.dumps(row, ensure_ascii=ascii_only)]
        expected.append((len(lines), row))
    manifest = write(tmp_path / "m.jsonl", *lines, end=end, bom=bom)

    items, tasks = good(manifest)
    assert [t.line for t in tasks] == [line for line, _ in expected]
    assert [dict(t.fields) for t in tasks] == [row for _, row in expected]
    assert [i.audio for i in items] == [tmp_path / row["audio_filepath"] for _, row in expected]
    assert [i.text for i in items] == [row["text"] for _, row in expected]
    assert [t.terms for t in tasks] == [expected_terms(row) for _, row in expected]


def expected_terms(row: dict) -> tuple[ContextTerm, ...]:
    """The documented rule: ``context`` (whitespace collapsed), then the file, deduplicated."""
    terms = []
    for entry in row.get("context", []):
        text, weight = (entry, 1) if isinstance(entry, str) else (entry["text"], entry["weight"])
        if text.split():
            terms.append(ContextTerm(" ".join(text.split()), float(weight)))
    if "context_file" in row:
        terms += [ContextTerm("Quilter", 2.0), ContextTerm("zebra")]
    return tuple(dedupe_terms(terms))


# --- the biasing benchmark's TSV: one reader, one writer ------------------------------


def test_reference_lines_read_back(tmp_path):
    rows = [("u1", "the quilter", {"quilter"}, ["quilter", "zébra"]), ("u2", "a\u2028b", set(), [])]
    text = "".join(format_ref_line(*row) for row in rows)
    assert '\t["quilter", "z\\u00e9bra"]\n' in text  # the published JSON: ASCII escapes
    for name, data in [
        ("r.tsv", text.encode()),
        ("r.tsv.gz", gzip.compress(text.encode())),
        ("bom.tsv", b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        refs = read_refs(path)
        assert {u: (r.text, set(r.rare_words)) for u, r in refs.items()} == {
            u: (t, rare) for u, t, rare, _ in rows
        }
        assert read_biasing_lists(path) == {u: tuple(b) for u, _, _, b in rows}


def test_reference_errors_name_the_line_an_editor_shows(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_bytes("u1\ta\u2028b\t[]\n\nu2\tx\t[1]\n".encode())
    with pytest.raises(CtxasrError, match="rare words: must be a JSON list") as err:
        read_biasing_lists(path)
    assert err.value.source == f"{path}:3"
    path.write_bytes(b"u1\t\xff\t[]\n")
    with pytest.raises(CtxasrError, match="is not UTF-8") as err:
        read_hyps(path)
    assert err.value.source == f"{path}:1"


@pytest.mark.parametrize(("uid", "text"), [("", "t"), ("a b", "t"), ("u", "a\tb"), ("u", "a\nb")])
def test_the_writer_refuses_what_would_not_read_back(uid, text):
    with pytest.raises(CtxasrError):
        format_ref_line(uid, text, [], [])


def test_old_import_names_still_work():
    from ctxasr.batch.rows import audio_key
    from ctxasr.data.biasing import format_ref_line as data_format
    from ctxasr.eval.score import Reference
    from ctxasr.eval.score import read_biasing_lists as score_lists

    assert data_format is format_ref_line and score_lists is read_biasing_lists
    assert Reference("a", frozenset()).text == "a" and audio_key({"audio": "x"}) == "x"
