import json

import pytest

from dnallm.data.dna import RecordError, check_pair, clean_sequence
from dnallm.data.kegg import load_examples, read_jsonl, split_records, write_jsonl
from dnallm.data.synthetic import planted_records


def _record(**overrides):
    flank = "ACGT" * 500  # 2,000 bp
    rec = {
        "question": "What disease?",
        "answer": "melanoma",
        "reasoning": "Step 1: ...",
        "reference_sequence": flank + "A" + flank,
        "variant_sequence": flank + "G" + flank,
    }
    rec.update(overrides)
    return rec


def _write(tmp_path, lines):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def load_one(tmp_path, record, window):
    path = tmp_path / "one.jsonl"
    write_jsonl(path, [record])
    return load_examples(path, window)[0]


def test_window_keeps_the_variant_at_the_centre(tmp_path):
    ex = load_one(tmp_path, _record(), 1024)
    assert len(ex["ref_window"]) == len(ex["var_window"]) == 1024
    diff = [i for i, (a, b) in enumerate(zip(ex["ref_window"], ex["var_window"])) if a != b]
    assert diff == [512]


def test_indel_windows_are_centred_on_each_allele(tmp_path):
    flank = "ACGT" * 500
    ex = load_one(
        tmp_path,
        _record(reference_sequence=flank + "CAG" * 10 + flank, variant_sequence=flank + "CAG" * 30 + flank),
        64,
    )
    # Both windows are centred on their own allele: the repeat sits in the middle of each.
    assert ex["ref_window"][17:47] == "CAG" * 10
    assert ex["var_window"] == ("CAG" * 30)[13:77]


def test_lowercase_is_accepted_and_upper_cased():
    assert clean_sequence("acgtn", where="r", field="f") == "ACGTN"


def test_invalid_base_names_record_field_and_position(tmp_path):
    path = _write(
        tmp_path, [json.dumps(_record()), json.dumps(_record(variant_sequence="ACGT" * 500 + "X" + "ACGT" * 500))]
    )
    with pytest.raises(
        RecordError, match=r"data.jsonl:2: field 'variant_sequence' has invalid character 'X' at position 2000"
    ):
        load_examples(path, 1024)


def test_sequence_shorter_than_window(tmp_path):
    path = _write(tmp_path, [json.dumps(_record(reference_sequence="ACGTA", variant_sequence="ACCTA"))])
    with pytest.raises(
        RecordError, match=r"data.jsonl:1: field 'reference_sequence' is 5 bp, shorter than dna_window=1024"
    ):
        load_examples(path, 1024)


def test_misaligned_pair_is_rejected():
    ref = "ACGT" * 1000 + "A"
    var = "TTGCA" * 800
    with pytest.raises(
        RecordError, match=r"rec7: reference_sequence \(4001 bp\) and variant_sequence \(4000 bp\) do not share flanks"
    ):
        check_pair(ref, var, where="rec7")


def test_unequal_length_indel_pair_is_accepted():
    flank = "ACGT" * 500
    check_pair(flank + "A" + flank, flank + flank, where="deletion")


def test_malformed_json_names_line(tmp_path):
    path = _write(tmp_path, [json.dumps(_record()), "{not json", json.dumps(_record())])
    with pytest.raises(RecordError, match=r"data.jsonl:2: malformed JSON"):
        read_jsonl(path)


def test_line_cut_short_is_reported_at_its_real_column(tmp_path):
    cut = '{"question": "q",'  # 17 characters: the parser runs out of line at column 18
    path = _write(tmp_path, [json.dumps(_record()), cut])
    with pytest.raises(RecordError, match=r"data.jsonl:2: malformed JSON \(.* at column 18\)"):
        read_jsonl(path)
    path.write_text('{"question": "q", "answer" 5}\r\n')  # Windows line end; the colon is missing at column 28
    with pytest.raises(RecordError, match=r"data.jsonl:1: malformed JSON \(Expecting ':' delimiter at column 28\)"):
        read_jsonl(path)


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(
        "\ufeff".encode()
        + (json.dumps(_record()) + "\n").encode()
        + (json.dumps(_record(answer="glioma")) + "\n").encode()
    )
    records = read_jsonl(path)
    assert [r["answer"] for r in records] == ["melanoma", "glioma"]
    assert load_examples(path, 1024)[0]["question"] == "What disease?"


def test_missing_field_names_line_and_field(tmp_path):
    rec = _record()
    del rec["answer"]
    path = _write(tmp_path, [json.dumps(_record()), "", json.dumps(rec)])
    with pytest.raises(RecordError, match=r"data.jsonl:3: missing field\(s\) answer"):
        load_examples(path, 1024)


def test_reasoning_required_only_when_training_with_it(tmp_path):
    rec = _record()
    del rec["reasoning"]
    path = _write(tmp_path, [json.dumps(rec)])
    assert load_examples(path, 1024)[0]["reasoning"] == ""
    with pytest.raises(RecordError, match="missing field\\(s\\) reasoning"):
        load_examples(path, 1024, need_reasoning=True)


def test_empty_dataset(tmp_path):
    path = _write(tmp_path, ["", "  "])
    with pytest.raises(RecordError, match="empty dataset"):
        read_jsonl(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_real_kegg_records_load_and_window(shared_kegg):
    for split, n in (("val", 144), ("test", 146)):
        ex = load_examples(shared_kegg / f"{split}.jsonl", 1024, need_reasoning=True)
        assert len(ex) == n
        for row in ex:
            assert len(row["ref_window"]) == len(row["var_window"]) == 1024
            assert set(row["ref_window"] + row["var_window"]) <= set("ACGTN")
        # SNVs (equal lengths) differ exactly at the window centre.
        raw = read_jsonl(shared_kegg / f"{split}.jsonl")
        snv = [i for i, r in enumerate(raw) if len(r["reference_sequence"]) == len(r["variant_sequence"]) == 4001]
        assert len(snv) > n // 2
        for i in snv:
            diff = [j for j, (a, b) in enumerate(zip(ex[i]["ref_window"], ex[i]["var_window"])) if a != b]
            assert diff == [512], (split, i, diff)


def test_split_is_stratified_deterministic_and_complete():
    records = planted_records(300, n_classes=6, length=101, seed=3)
    records += [dict(records[0], answer="rare disease")]  # a singleton class goes to train
    a, b = split_records(records, seed=7), split_records(records, seed=7)
    assert [r["variant_sequence"] for r in a["test"]] == [r["variant_sequence"] for r in b["test"]]
    assert sum(len(v) for v in a.values()) == len(records)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (241, 30, 30)
    for part in ("val", "test"):
        labels = [r["answer"] for r in a[part]]
        assert sorted(set(labels)) == sorted({r["answer"] for r in records} - {"rare disease"})
        assert all(labels.count(x) == 5 for x in set(labels))
    assert any(r["answer"] == "rare disease" for r in a["train"])
    assert split_records(records, seed=8)["test"] != a["test"]


def test_planted_records_carry_the_label_in_the_variant_only():
    from dnallm.data.synthetic import DISEASES, class_motifs

    motifs = class_motifs(4)
    centre = 200
    for rec in planted_records(40, n_classes=4, length=401, seed=1):
        motif = rec["variant_sequence"][centre - 4 : centre + 5]
        assert motif == motifs[DISEASES.index(rec["answer"])]
        assert rec["reference_sequence"][centre - 4 : centre + 5] not in motifs
        assert rec["reference_sequence"][:centre] == rec["variant_sequence"][:centre]
        assert rec["reference_sequence"][centre + 1 :] == rec["variant_sequence"][centre + 1 :]
