"""Tests for ``ctxasr.context.terms``: the term-list and keyword formats users write."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxasr.context.terms import (
    ContextTerm,
    decode_text,
    dedupe_terms,
    join_documents,
    parse_keywords,
    parse_term_list,
    read_term_file,
    read_text_file,
)
from ctxasr.errors import ContextError

T = ContextTerm


def test_one_term_a_line_with_default_weight():
    assert parse_term_list("Kubernetes\netcd\nPostgreSQL\n") == [
        T("Kubernetes"),
        T("etcd"),
        T("PostgreSQL"),
    ]


def test_blank_lines_and_comment_lines_are_skipped():
    text = "# people\n\nAda Lovelace\n   \n  # indented comment\n\tGrace Hopper\n"

    assert parse_term_list(text) == [T("Ada Lovelace"), T("Grace Hopper")]


def test_tab_separated_weight():
    assert parse_term_list("Kubernetes\t2.5\netcd\t1e1\nNode.js\t 3 \n") == [
        T("Kubernetes", 2.5),
        T("etcd", 10.0),
        T("Node.js", 3.0),
    ]


def test_inner_whitespace_is_collapsed_but_spaces_do_not_separate_a_weight():
    terms = parse_term_list("  New   York  City \nversion 2\n")

    assert terms == [T("New York City"), T("version 2")]


def test_trailing_comment_is_stripped_but_a_hash_inside_a_term_stays():
    text = "C#\nF# language\t2 # functional\nPython  # snakes\n#hashtag\nIssue #42\n"

    # "#hashtag" starts a line, so it is a comment; "Issue #42" has " #": a comment too.
    assert parse_term_list(text) == [T("C#"), T("F# language", 2.0), T("Python"), T("Issue")]


def test_weight_then_comment_after_tab():
    assert parse_term_list("gRPC\t4\t# very important\n") == [T("gRPC", 4.0)]


def test_crlf_line_endings():
    assert parse_term_list("alpha\r\nbeta\t2\r\n") == [T("alpha"), T("beta", 2.0)]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("Kubernetes\theavy", "weight 'heavy' is not a number"),
        ("Kubernetes\t0", "weight '0' must be a positive number"),
        ("Kubernetes\t-1.5", "weight '-1.5' must be a positive number"),
        ("Kubernetes\tnan", "weight 'nan' must be a positive number"),
        ("Kubernetes\tinf", "weight 'inf' must be a positive number"),
    ],
)
def test_bad_weight_names_file_and_line(line, problem):
    with pytest.raises(ContextError) as caught:
        parse_term_list(f"# header\nfirst\n\n{line}\nlast\n", source="terms.txt")

    assert caught.value.source == "terms.txt:4"
    assert caught.value.problem == problem
    assert str(caught.value) == f"terms.txt:4: {problem}"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   \n#another\n", "  # x\n\t\n"])
def test_no_usable_term_is_an_error(text):
    with pytest.raises(ContextError, match=r"^terms\.txt: has no usable term"):
        parse_term_list(text, source="terms.txt")


def test_dedupe_keeps_first_spelling_and_highest_weight():
    text = "kubernetes\nKubernetes\t3\nKUBERNETES\t2\netcd\t5\nETCD\n"

    assert parse_term_list(text) == [T("kubernetes", 3.0), T("etcd", 5.0)]


def test_dedupe_terms_keeps_first_order():
    terms = [T("b"), T("a", 2.0), T("B", 4.0), T("c"), T("A")]

    assert dedupe_terms(terms) == [T("b", 4.0), T("a", 2.0), T("c")]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ab", "AB", "Ab", "cd", "ef"]), st.floats(0.1, 10))))
def test_dedupe_matches_a_casefold_reference(items):
    terms = [T(text, w) for text, w in items]

    got = dedupe_terms(terms)

    keys = list(dict.fromkeys(t.text.casefold() for t in terms))
    assert [t.text.casefold() for t in got] == keys
    for t in got:
        same = [u for u in terms if u.text.casefold() == t.text.casefold()]
        assert t.text == same[0].text
        assert t.weight == max(u.weight for u in same)


# --- files --------------------------------------------------------------------------------


def test_read_term_file(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_text("Kubernetes\t2\n# c\netcd\n", encoding="utf-8")

    assert read_term_file(path) == [T("Kubernetes", 2.0), T("etcd")]


def test_utf8_bom_is_ignored(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_bytes("\ufeffMüller\nZoë\t2\n".encode("utf-8"))

    assert read_term_file(path) == [T("Müller"), T("Zoë", 2.0)]


def test_bom_before_a_comment_line(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_bytes("\ufeff# heading\nterm\n".encode("utf-8"))

    assert read_term_file(path) == [T("term")]


def test_bad_weight_in_a_file_names_the_path_and_line(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_text("ok\n\nbad\tx\n", encoding="utf-8")

    with pytest.raises(ContextError) as caught:
        read_term_file(path)

    assert caught.value.source == f"{path}:3"


def test_non_utf8_file_names_the_path_and_offset(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_bytes("caf\u00e9\n".encode("latin-1"))

    with pytest.raises(ContextError) as caught:
        read_term_file(path)

    assert caught.value.source == str(path)
    assert caught.value.problem == "is not UTF-8 text (invalid byte at offset 3)"


def test_a_binary_file_is_not_text(tmp_path):
    path = tmp_path / "slides.pdf"
    path.write_bytes(b"%PDF-1.7\n\x00\x01")

    with pytest.raises(ContextError) as caught:
        read_text_file(path)

    assert str(caught.value) == f"{path}: is a binary file, not text"


def test_bytes_are_decoded_as_a_text_file_is_read():
    assert decode_text("\ufeffZürich\n".encode(), "upload") == "Zürich\n"  # the BOM dropped
    with pytest.raises(ContextError, match=r"^upload: is a binary file, not text$"):
        decode_text(b"text\0", "upload")
    with pytest.raises(
        ContextError, match=r"^upload: is not UTF-8 text \(invalid byte at offset 1\)$"
    ):
        decode_text("Zürich".encode("latin-1"), "upload")


@pytest.mark.parametrize(
    ("texts", "joined"),
    [
        ([], None),
        ([None, "  \n", ""], None),
        (["Slides.\n"], "Slides.\n"),  # alone: as it is
        ([None, "Slides.\n\n", " ", "Paper.\n"], "Slides.\n\nPaper."),
        (["  Indented.", "Next."], "  Indented.\n\nNext."),
    ],
)
def test_documents_join_with_a_blank_line_between(texts, joined):
    assert join_documents(texts) == joined


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ContextError, match="no such file"):
        read_text_file(tmp_path / "nope.txt")
    with pytest.raises(ContextError, match="is a directory"):
        read_term_file(tmp_path)


def test_file_with_no_usable_term_names_the_path(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_text("# nothing here\n\n", encoding="utf-8")

    with pytest.raises(ContextError) as caught:
        read_term_file(path)

    assert caught.value.source == str(path)


# --- keywords -----------------------------------------------------------------------------


def test_keywords_are_comma_separated():
    terms = parse_keywords("Kubernetes, etcd ,  New   York,,")

    assert terms == [T("Kubernetes"), T("etcd"), T("New York")]


def test_keywords_dedupe_case_insensitively():
    assert parse_keywords("etcd, ETCD, Etcd, gRPC") == [T("etcd"), T("gRPC")]


@pytest.mark.parametrize("text", ["", " , ,", "   "])
def test_keywords_without_a_term_are_an_error(text):
    with pytest.raises(ContextError, match=r"^--keywords: has no usable term"):
        parse_keywords(text)
