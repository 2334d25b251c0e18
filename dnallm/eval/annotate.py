"""``dnallm annotate``: a trained checkpoint's answer for every ALT allele of a VCF.

Alleles are read in file order and cut into the model's ``dna_window`` around each
allele: the same windows ``dnallm windows`` followed by ``dnallm eval`` would give.
Batch k is always the k-th group of ``batch_size`` usable alleles, so a resumed run
computes the remaining batches exactly as an uninterrupted run would (same padding, same
numbers with deterministic kernels, as on CPU) and writes byte-identical outputs.

Each finished batch is appended to ``<OUT>.progress.jsonl`` before the next one starts.
Only when every batch is done are the outputs written, each atomically: the annotated
VCF (with a tabix index when bgzipped and sorted), a TSV with one row per ALT allele, and
a PNG summary. The progress log is then removed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from dnallm.data.vcf import InputError, VariantReader, contig_map_file, count_alleles, open_fasta
from dnallm.data.vcf_to_kegg import load_genes, prepared_alleles
from dnallm.data.windows import WindowOptions, check_question_template
from dnallm.eval.answers import Prediction, predict_batch
from dnallm.eval.kegg import max_new_tokens_for
from dnallm.eval.progress import ProgressLog, ProgressMismatch, file_sha256
from dnallm.eval.vcf_out import AlleleResult, check_vcf_header, write_annotated_vcf, write_summary_plot, write_tsv
from dnallm.fusion import DNAFusionLM
from dnallm.hub import resolve_checkpoint
from dnallm.io import check_outputs, exclusive_output


def output_paths(out: str | Path, tsv: str | Path | None) -> tuple[Path, Path, Path]:
    """(annotated VCF, TSV, progress log); the VCF must end in .vcf or .vcf.gz."""
    out = Path(out)
    if not (out.name.endswith(".vcf") or out.name.endswith(".vcf.gz")):
        raise InputError(f"--out must end in .vcf or .vcf.gz (bgzipped, indexed), got {out}")
    stem = out.name.removesuffix(".gz").removesuffix(".vcf")
    return out, Path(tsv) if tsv else out.with_name(f"{stem}.tsv"), out.with_name(f"{out.name}.progress.jsonl")


class BatchRunner:
    """Groups usable alleles into fixed batches; reuses logged batches, computes and logs the rest."""

    def __init__(
        self,
        predict: Callable[[list[dict]], list[Prediction]],
        log: ProgressLog,
        done: dict[int, list],
        batch_size: int,
        stop_after: int | None,
    ):
        self.predict, self.log, self.done = predict, log, done
        self.batch_size, self.stop_after = batch_size, stop_after
        self.pending: list[tuple[AlleleResult, dict]] = []
        self.index = self.computed = self.reused = 0

    def add(self, result: AlleleResult, example: dict) -> bool:
        """Queue one allele; True when ``stop_after`` batches have now been computed."""
        self.pending.append((result, example))
        return len(self.pending) == self.batch_size and self.flush()

    def flush(self) -> bool:
        if not self.pending:
            return False
        keys = [[r.allele.record, r.allele.alt_index] for r, _ in self.pending]
        if self.index in self.done:
            predictions = self._logged(keys)
            self.reused += 1
        else:
            predictions = self.predict([example for _, example in self.pending])
            rows = [[*key, p.label, p.probability, p.reply] for key, p in zip(keys, predictions)]
            self.log.append(self.index, rows)
            self.computed += 1
        for (result, _), p in zip(self.pending, predictions):
            result.prediction = p
        self.pending, self.index = [], self.index + 1
        return self.stop_after is not None and self.computed >= self.stop_after

    def _logged(self, keys: list[list[int]]) -> list[Prediction]:
        rows = self.done[self.index]
        if [row[:2] for row in rows] != keys:
            raise ProgressMismatch(
                f"{self.log.path}: batch {self.index} holds other alleles than this run's; delete it to start over"
            )
        return [Prediction(label, probability, reply) for _, _, label, probability, reply in rows]


def run_fingerprint(checkpoint: Path, vcf, fasta, gtf, options: dict) -> dict:
    """What must not change between a run and its resumption (known before any model loads)."""

    def described(path):
        return [str(Path(path).resolve()), Path(path).stat().st_size] if path else None

    return {
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": [file_sha256(checkpoint / name) for name in ("recipe.yaml", "trainable.safetensors")],
        "vcf_sha256": file_sha256(vcf),
        "fasta": described(fasta),
        "gtf": described(gtf),
        **options,
    }


def annotate(
    checkpoint: str | Path,
    vcf: str | Path,
    fasta: str | Path,
    out: str | Path,
    *,
    tsv: str | Path | None = None,
    batch_size: int = 0,
    max_new_tokens: int = 0,
    contig_names: str = "same",
    strict: bool = False,
    gtf: str | Path | None = None,
    question_template: str | None = None,
    max_n_fraction: float = 0.25,
    edge: str = "pad",
    overrides: list[str] | tuple = (),
    stop_after: int | None = None,
    trust_remote_code: bool = False,
    loaded=None,
    on_progress=None,
) -> dict:
    """Annotate every ALT allele of ``vcf``; returns a summary.

    ``batch_size`` / ``max_new_tokens`` of 0 take the checkpoint recipe's ``eval`` values.
    ``stop_after=N`` ends the run after computing N batches, as a crash would: the
    progress log is kept and no output is written (used to test resumption).
    ``loaded``: the checkpoint already loaded (``Pretrained``), e.g. by a server;
    ``on_progress(done, total)``: called before each allele and once all are computed, before any
    output is written (an exception it raises stops the run; the progress log is kept).
    """
    out, tsv, progress = output_paths(out, tsv)
    checkpoint = resolve_checkpoint(checkpoint)
    check_outputs(
        [out, f"{out}.tbi", tsv, tsv.with_suffix(".png"), progress],
        inputs=[vcf, fasta, gtf, contig_map_file(contig_names), checkpoint],
    )
    if question_template is not None:
        check_question_template(question_template)
    check_vcf_header(vcf)  # its INFO fields fit, before any model loads
    with exclusive_output(progress, "progress log", folder=False):  # one run per output
        return _annotate(
            checkpoint,
            vcf,
            fasta,
            out,
            tsv,
            progress,
            gtf=gtf,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            contig_names=contig_names,
            strict=strict,
            question_template=question_template,
            max_n_fraction=max_n_fraction,
            edge=edge,
            overrides=overrides,
            stop_after=stop_after,
            trust_remote_code=trust_remote_code,
            loaded=loaded,
            on_progress=on_progress,
        )


def _annotate(
    checkpoint: Path,
    vcf,
    fasta,
    out: Path,
    tsv: Path,
    progress: Path,
    *,
    gtf,
    batch_size,
    max_new_tokens,
    contig_names,
    strict,
    question_template,
    max_n_fraction,
    edge,
    overrides,
    stop_after,
    trust_remote_code,
    loaded,
    on_progress,
) -> dict:
    reference = open_fasta(fasta)
    genes = load_genes(gtf, reference, fasta)
    options = dict(
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        contig_names=contig_names,
        strict=strict,
        question_template=question_template,
        max_n_fraction=max_n_fraction,
        edge=edge,
        overrides=list(overrides),
    )
    log = ProgressLog(progress, run_fingerprint(checkpoint, vcf, fasta, gtf, options))
    done = log.load()  # a resumption with other inputs fails here, before the models load

    if loaded is None:
        loaded = DNAFusionLM.from_pretrained(checkpoint, overrides=overrides, trust_remote_code=trust_remote_code)
    recipe = loaded.recipe
    max_new_tokens = max_new_tokens or max_new_tokens_for(recipe, loaded.processor.tokenizer)[0]
    predict = partial(
        predict_batch,
        loaded.model,
        loaded.dna_source,
        loaded.processor,
        max_new_tokens=max_new_tokens,
        encoder_batch_size=recipe.encoder.batch_size,
        device=loaded.device,
    )
    runner = BatchRunner(predict, log, done, batch_size or recipe.eval.batch_size, stop_after)
    opts = WindowOptions(crop=recipe.data.dna_window, edge=edge, max_n_fraction=max_n_fraction)
    reader = VariantReader(vcf, reference, fasta, contig_names=contig_names, strict=strict)
    alleles = prepared_alleles(
        reader, opts, genes=genes, question_template=question_template, require_shared_flanks=False
    )
    results, stopped = run_batches(alleles, runner, total=count_alleles(vcf), on_progress=on_progress)

    summary = {"batches_computed": runner.computed, "batches_resumed": runner.reused, "progress": str(progress)}
    if stopped:
        return {**summary, "stopped": True}
    written = write_outputs(results, vcf, out, tsv, reader, note=f"checkpoint={checkpoint} dna_window={opts.crop}")
    log.remove()
    return {**summary, **written, "progress": None}


def run_batches(alleles, runner: BatchRunner, total: int, on_progress=None) -> tuple[list[AlleleResult], bool]:
    """One result per allele in file order; True when the runner asked to stop early."""
    results = []
    for allele, pair, gene, question in tqdm(alleles, total=total, desc="annotating", unit="allele"):
        if on_progress is not None:
            on_progress(len(results), total)
        results.append(AlleleResult(allele, gene, pair.padded if pair else None))
        if pair and runner.add(
            results[-1], {"question": question, "ref_window": pair.reference, "var_window": pair.variant}
        ):
            return results, True
    stopped = runner.flush()
    if on_progress is not None:
        on_progress(len(results), total)  # every allele computed (the last chance to stop before writing)
    return results, stopped


def write_outputs(results: list[AlleleResult], vcf, out: Path, tsv: Path, reader: VariantReader, *, note: str) -> dict:
    by_record: dict[int, dict[int, AlleleResult]] = defaultdict(dict)
    for result in results:
        by_record[result.allele.record][result.allele.alt_index] = result
    sorted_bgzip = out.name.endswith(".gz") and not reader.unsorted
    plot = tsv.with_suffix(".png")
    written: list[Path] = []
    try:  # every output or none: what a failing write leaves is removed
        index = write_annotated_vcf(vcf, out, by_record, note=note, index=sorted_bgzip)
        written += [out, *([index] if index else [])]
        write_tsv(results, tsv)
        written.append(tsv)
        write_summary_plot(results, plot)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    status = Counter(r.status for r in results)
    summary = {
        "out": str(out),
        "index": str(index) if index else None,
        "tsv": str(tsv),
        "plot": str(plot),
        "records": reader.counts["records"],
        "alleles": len(results),
        "annotated": status.pop("annotated", 0),
        "no_answer": status.pop("no_answer", 0),
        "skipped": dict(sorted(status.items())),
        "labels": dict(Counter(r.prediction.label for r in results if r.status == "annotated").most_common(10)),
    }
    if reader.unsorted:
        summary["unsorted"] = (
            f"{reader.unsorted}; the output keeps the input order and is not indexed. Sort it with "
            f"bcftools sort -Oz -o sorted.vcf.gz {out} && tabix -p vcf sorted.vcf.gz"
        )
    return summary
