"""Write annotations back: INFO fields in a copy of the input VCF, a TSV, a summary plot."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pysam

from dnallm.data.vcf import Allele, InputError, open_vcf, quiet_htslib
from dnallm.eval.answers import Prediction
from dnallm.io import atomic_open, save_figure

INFO_FIELDS = {
    "DNALLM_LABEL": (
        "A",
        "String",
        "Label the dnallm model answered for each ALT allele, percent-encoded as in VCF 4.3 (space %20, comma %2C, semicolon %3B, equals %3D, colon %3A, percent %25)",
    ),
    "DNALLM_PROB": (
        "A",
        "Float",
        "Probability the dnallm model gave the tokens it wrote after 'Answer:' (the label and the end of its reply)",
    ),
    "DNALLM_SKIP": (
        "A",
        "String",
        "Why an ALT allele has no DNALLM_LABEL: the skip reason (see docs/vcf.md), or no_answer when the reply had no 'Answer:' line",
    ),
}
TSV_COLUMNS = (
    "record",
    "alt_index",
    "chrom",
    "pos",
    "id",
    "ref",
    "alt",
    "gene",
    "status",
    "label",
    "probability",
    "padded_bases",
    "reply",
    "detail",
)
_PERCENT = {c: f"%{ord(c):02X}" for c in "% ,:;=\t\r\n"}


@dataclass
class AlleleResult:
    """What annotate found for one ALT allele: a prediction, or the reason it has none."""

    allele: Allele
    gene: str = ""
    padded: int | None = None  # N bases past a chromosome end in the window; None when skipped
    prediction: Prediction | None = None

    @property
    def status(self) -> str:
        if self.allele.skip:
            return self.allele.skip
        return "annotated" if self.prediction and self.prediction.label else "no_answer"


def percent_encode(text: str) -> str:
    return "".join(_PERCENT.get(c, c) for c in text)


def _escape(value) -> str:
    """One TSV cell on one line: backslash escapes for backslash, tab and newline."""
    if value is None:
        return ""
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")


def tsv_row(result: AlleleResult) -> str:
    a, p = result.allele, result.prediction
    probability = f"{p.probability:.6g}" if p and p.probability is not None else ""
    cells = (
        a.record,
        a.alt_index,
        a.chrom,
        a.pos,
        a.id,
        a.ref,
        a.alt,
        result.gene,
        result.status,
        p.label if p else "",
        probability,
        result.padded,
        p.reply if p else "",
        a.detail,
    )
    return "\t".join(_escape(c) for c in cells) + "\n"


def write_tsv(results: list[AlleleResult], path: str | Path) -> None:
    with atomic_open(path) as f:
        f.write("\t".join(TSV_COLUMNS) + "\n")
        for result in results:
            f.write(tsv_row(result))


def annotated_header(header: pysam.VariantHeader, note: str, where: str = "the input VCF") -> pysam.VariantHeader:
    """The input's header (END declared by ``open_vcf``) with the annotation's INFO fields."""
    header = header.copy()
    for key, (number, kind, description) in INFO_FIELDS.items():
        if key in header.info:
            have = header.info[key]
            if (str(have.number), have.type) != (number, kind):
                raise InputError(
                    f"{where} already defines INFO {key} as Number={have.number},Type={have.type}; "
                    f"dnallm writes Number={number},Type={kind}: remove or rename that header line"
                )
            continue
        header.add_line(f'##INFO=<ID={key},Number={number},Type={kind},Description="{description}">')
    header.add_line(f"##dnallm_annotate={note}")
    return header


def set_info(rec, results: dict[int, AlleleResult]) -> None:
    """Number=A lists, '.' where an ALT has no value; keys without any value are removed."""
    n_alts = len(rec.alts or ())
    missing = {key: "." if kind == "String" else None for key, (_, kind, _) in INFO_FIELDS.items()}
    values = {key: [missing[key]] * n_alts for key in INFO_FIELDS}
    for index in range(1, n_alts + 1):
        result = results.get(index)
        if result is None:
            continue
        p = result.prediction
        if result.status == "annotated":
            values["DNALLM_LABEL"][index - 1] = percent_encode(p.label)
            values["DNALLM_PROB"][index - 1] = p.probability
        else:
            values["DNALLM_SKIP"][index - 1] = result.status
    for key, items in values.items():
        if any(v != missing[key] for v in items):
            rec.info[key] = tuple(items)
        elif key in rec.info:
            del rec.info[key]


def _partial_name(out: Path) -> Path:
    # tabix decides from the '.gz' ending whether a file is already compressed.
    suffix = ".vcf.gz" if out.name.endswith(".gz") else ".vcf"
    return out.with_name(f".{out.name}.partial{suffix}")


def write_annotated_vcf(
    src: str | Path, out: str | Path, by_record: dict[int, dict[int, AlleleResult]], *, note: str, index: bool
) -> Path | None:
    """Copy ``src`` to ``out`` with the INFO fields added; bgzipped when ``out`` ends in
    .gz, with a tabix index when ``index`` (needs a sorted file). Atomic: ``out`` appears
    only when complete. -> the index path, or None."""
    out = Path(out)
    tmp = _partial_name(out)
    try:
        with open_vcf(src) as vin:
            with quiet_htslib():
                # Reading every record defines the contigs and tags the header leaves undeclared.
                for _ in vin:
                    pass
            vin.reset()
            header = annotated_header(vin.header, note, str(src))
            with pysam.VariantFile(str(tmp), "wz" if out.name.endswith(".gz") else "w", header=header) as vout:
                for number, rec in enumerate(vin, start=1):
                    rec.translate(vout.header)
                    set_info(rec, by_record.get(number, {}))
                    vout.write(rec)
        if index:
            pysam.tabix_index(str(tmp), preset="vcf", force=True)
        Path(f"{out}.tbi").unlink(missing_ok=True)  # never leave an index of an older file
        os.replace(tmp, out)
        if index:
            os.replace(f"{tmp}.tbi", f"{out}.tbi")
            return Path(f"{out}.tbi")
        return None
    except BaseException:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.tbi").unlink(missing_ok=True)
        raise


def check_vcf_header(src: str | Path) -> None:
    """Before any inference: the annotation's INFO fields fit the input's header."""
    with open_vcf(src) as vin:
        annotated_header(vin.header, "", str(src))


def write_summary_plot(results: list[AlleleResult], path: str | Path, top: int = 15) -> None:
    """Predicted labels (counts) and how sure the model was (probability histogram)."""
    from dnallm.io import file_figures

    plt = file_figures()

    annotated = [r.prediction for r in results if r.status == "annotated"]
    labels = Counter(p.label for p in annotated).most_common(top)
    probabilities = [p.probability for p in annotated if p.probability is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    if labels:
        names, counts = zip(*reversed(labels))
        left.barh(names, counts, color="#4c72b0")
    left.set_xlabel("ALT alleles")
    left.set_title(f"Predicted labels ({len(annotated)} of {len(results)} alleles annotated)")
    right.hist(probabilities, bins=20, range=(0, 1), color="#55a868")
    right.set_xlabel("probability of the predicted label")
    right.set_ylabel("ALT alleles")
    right.set_title("Model confidence")
    fig.tight_layout()
    save_figure(fig, path, format="png", metadata={"Software": None})
