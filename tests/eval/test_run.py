"""Evaluation manifests, the condition runner and its outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctxasr.errors import CtxasrError
from ctxasr.eval.manifest import EvalItem, rare_words_of, read_biasing_tsv, read_manifest
from ctxasr.eval.run import context_for, evaluate, metrics_dict, write_outputs

FIXTURES = Path(__file__).parent.parent / "fixtures"


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_manifest_fields_and_relative_paths(tmp_path):
    (tmp_path / "terms.txt").write_text("Kubernetes\t2\netcd\n")
    manifest = write_lines(
        tmp_path / "m.jsonl",
        [
            {
                "audio_filepath": "a/one.wav",
                "text": "hello kubernetes",
                "duration": 1.5,
                "context": ["Kubernetes"],
                "rare_words": ["Kubernetes"],
                "speaker": "s1",
            },
            {
                "audio_filepath": "/abs/two.flac",
                "text": "two",
                "context_file": "terms.txt",
                "id": "x2",
            },
            {"audio": "three.wav", "text": "three"},
        ],
    )
    one, two, three = read_manifest(manifest)
    assert one == EvalItem(
        "one",
        tmp_path / "a/one.wav",
        "hello kubernetes",
        ("Kubernetes",),
        frozenset({"kubernetes"}),
        1.5,
        (("speaker", "s1"),),
    )
    assert two.id == "x2" and two.audio == Path("/abs/two.flac")
    assert two.context == ("Kubernetes", "etcd") and two.rare_words is None
    assert three.audio == tmp_path / "three.wav" and three.context == ()


@pytest.mark.parametrize(
    "row,problem",
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "is not a JSON object"),
        ({"text": "no audio"}, "audio_filepath"),
        ({"audio_filepath": "a.wav", "text": "t", "context": "a, b"}, "list of strings"),
        ({"audio_filepath": "a.wav", "text": "t", "rare_words": [1]}, "list of strings"),
    ],
)
def test_malformed_manifest_rows_name_file_and_line(tmp_path, row, problem):
    manifest = write_lines(tmp_path / "m.jsonl", [{"audio_filepath": "ok.wav", "text": "ok"}, row])
    with pytest.raises(CtxasrError, match=problem) as err:
        read_manifest(manifest)
    assert err.value.source == f"{manifest}:2"


def test_duplicate_ids_and_empty_manifests_are_errors(tmp_path):
    dup = write_lines(
        tmp_path / "d.jsonl",
        [{"audio_filepath": "a.wav", "text": "1"}, {"audio_filepath": "b/a.wav", "text": "2"}],
    )
    with pytest.raises(CtxasrError, match="appears twice"):
        read_manifest(dup)
    with pytest.raises(CtxasrError, match="no utterance"):
        read_manifest(write_lines(tmp_path / "e.jsonl", [""]))


def test_biasing_tsv_finds_audio_flat_or_nested(tmp_path):
    tsv = tmp_path / "ref.tsv"
    tsv.write_text(
        '1-2-0001\tthe quilter\t["quilter"]\t["quilter", "zebra"]\n'
        '1-2-0002\tno rare here\t[]\t["zebra"]\n'
    )
    (tmp_path / "audio" / "1" / "2").mkdir(parents=True)
    (tmp_path / "audio" / "1" / "2" / "1-2-0001.flac").write_bytes(b"x")
    (tmp_path / "audio" / "1-2-0002.wav").write_bytes(b"x")
    first, second = read_biasing_tsv(tsv, tmp_path / "audio")
    assert first.audio.name == "1-2-0001.flac" and first.context == ("quilter", "zebra")
    assert first.rare_words == frozenset({"quilter"}) and second.rare_words == frozenset()
    (tmp_path / "audio" / "1-2-0002.wav").unlink()
    with pytest.raises(CtxasrError, match="no audio for utterance '1-2-0002'"):
        read_biasing_tsv(tsv, tmp_path / "audio")


def test_rare_words_come_from_the_common_5k_list():
    assert rare_words_of("Mister Quilter is the apostle of the middle classes") == {
        "quilter",
        "apostle",
    }


def test_conditions_choose_the_context():
    item = EvalItem("u", Path("u.wav"), "Mister Quilter", ("Quilter", "zebra"))
    assert context_for(item, "none") == ()
    assert context_for(item, "context") == ("Quilter", "zebra")
    assert context_for(item, "oracle") == ("quilter",)
    with pytest.raises(CtxasrError, match="unknown condition"):
        context_for(item, "everything")


def fake_recognizer(audio: Path, terms, document=None):
    # "Hears" the rare word only when it is in the context: the shape of real biasing.
    heard = "mister quilter" if "Quilter" in terms or "quilter" in terms else "mister quilt her"
    return heard + " is here", tuple(terms)


def test_evaluate_scores_every_condition_and_reports_progress():
    items = [
        EvalItem("u1", Path("u1.wav"), "Mister Quilter is here", ("Quilter",)),
        EvalItem("u2", Path("u2.wav"), "Mister Quilter is here", ()),
    ]
    calls = []
    report = evaluate(
        items,
        fake_recognizer,
        system="fake",
        conditions=["none", "context", "oracle"],
        durations={"u1": 2.0, "u2": 3.0},
        progress=lambda d, t: calls.append((d, t)),
    )
    by = {r.condition: r for r in report.results}
    assert by["none"].scores.b_wer.error_rate == 100.0  # quilter missed twice
    assert by["none"].scores.b_wer.ref_words == 2 and by["none"].scores.u_wer.ins == 2
    assert by["context"].scores.b_wer.errors == 1  # u2 has no context
    assert by["oracle"].scores.wer.errors == 0
    assert by["oracle"].audio_seconds == 5.0
    assert len(report.predictions) == 6
    assert calls[-1] == (15.0, 15.0) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_a_document_goes_to_the_recognizer_under_context_only(tmp_path):
    (tmp_path / "chapter.txt").write_text("Mister Quilter is the apostle of the middle classes.\n")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "u1.wav", "text": "Mister Quilter is here",
                                    "context": ["zebra"], "context_text_file": "chapter.txt"}) + "\n")  # fmt: skip
    (item,) = read_manifest(manifest)
    assert item.context_text == "Mister Quilter is the apostle of the middle classes.\n"
    assert item.context == ("zebra", "Mister Quilter", "apostle")  # own terms, then the text's

    calls = []

    def recognize(audio, terms, document):
        calls.append((tuple(terms), document))
        return fake_recognizer(audio, ["Quilter"] if document and "Quilter" in document else terms)

    report = evaluate([item], recognize, system="fake", conditions=["none", "context", "oracle"])
    assert calls == [((), None), (item.context, item.context_text), (("quilter",), None)]
    by = {r.condition: r for r in report.results}
    assert by["context"].scores.b_wer.errors == 0 and by["none"].scores.b_wer.errors == 1


def test_outputs_are_written(tmp_path):
    items = [
        EvalItem(
            "u1", Path("u1.wav"), "Mister Quilter is here", ("Quilter",), extra=(("spk", "a"),)
        )
    ]
    report = evaluate(items, fake_recognizer, system="fake", durations={"u1": 2.0})
    paths = write_outputs(report, items, tmp_path / "out", title="test")
    rows = [json.loads(line) for line in paths["predictions.jsonl"].read_text().splitlines()]
    assert [r["condition"] for r in rows] == ["none", "context"]
    assert rows[1]["pred_text"] == "mister quilter is here" and rows[1]["spk"] == "a"
    assert rows[1]["rare_words"] == ["quilter"]
    metrics = json.loads(paths["metrics.json"].read_text())
    assert metrics == json.loads(json.dumps(metrics_dict(report)))
    assert metrics["conditions"]["context"]["b_wer"]["error_rate"] == 0.0
    assert "| fake | context | 0.00 | 0.00 | 0.00 | 1 |" in paths["report.md"].read_text()
    assert paths["plot.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.model
def test_eval_command_end_to_end(tmp_path):
    out = tmp_path / "eval"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctxasr.cli",
            "eval",
            str(FIXTURES / "audio" / "eval.jsonl"),
            "-o",
            str(out),
            "-q",
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items()},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| none |" in proc.stdout and "| context |" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())["conditions"]
    assert metrics["context"]["b_wer"]["error_rate"] < metrics["none"]["b_wer"]["error_rate"]
    assert metrics["none"]["rtfx"] > 1
    assert {p.name for p in out.iterdir()} == {
        "predictions.jsonl",
        "metrics.json",
        "report.md",
        "plot.png",
    }
