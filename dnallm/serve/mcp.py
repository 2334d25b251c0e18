"""The trained model as Model Context Protocol tools, for assistants that call tools.

``dnallm mcp CHECKPOINT`` serves, over stdio (desktop assistants) or streamable HTTP
(``--http``), on the official ``mcp`` SDK:

- ``ask``: a question about a reference / variant pair -> reply, label, probability;
- ``predict_variant``: chrom, pos, ref, alt on the server's ``--fasta`` -> the windows the
  project cuts (as ``dnallm windows`` / ``annotate`` do), label, probability, reply;
- ``annotate_vcf``: a VCF under ``--data-root`` -> the annotated VCF, TSV and plot there, with
  progress notifications;
- ``explain``: per-base importance over a region, as numbers and a PNG;
- ``embed``: pooled frozen-encoder embeddings of sequences;
- the resource ``dnallm://model-card``: encoder, LLM, label set, metrics.

Each call runs in a worker thread, one at a time (the model is one), under its tool's timeout
(``--tool-timeout SECONDS`` for all, ``--tool-timeout TOOL=SECONDS`` for one).
A bad input, a path outside ``--data-root`` or a timeout is a tool error of one line with a
hint; the server keeps answering. A timed-out ``annotate_vcf`` stops at its next allele and
keeps its progress log (the same call resumes); a timed-out ``ask`` / ``explain`` finishes in
the background, and the next call waits for it.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Annotated, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from pydantic import Field

from dnallm.data.dna import RecordError, clean_sequence
from dnallm.data.vcf import InputError
from dnallm.hub import first_line

TOOLS = ("ask", "predict_variant", "annotate_vcf", "explain", "embed")
DEFAULT_TIMEOUT = 300.0


def tool_error(error: BaseException) -> ToolError | None:
    """A user's input that cannot be used, as the one line ``dnallm`` prints for it; None for a bug."""
    from dnallm.cli import _user_errors
    from dnallm.io import disk_error_message

    if isinstance(error, (*_user_errors(), PermissionError)):
        return ToolError(first_line(error))
    if isinstance(error, OSError) and disk_error_message(error):
        return ToolError(disk_error_message(error))
    return None


def parse_timeouts(values: list[str] | tuple = ()) -> dict[str, float]:
    """``--tool-timeout`` values (``SECONDS`` or ``TOOL=SECONDS``, the last word wins) -> tool -> seconds."""
    timeouts = dict.fromkeys(TOOLS, DEFAULT_TIMEOUT)
    for value in values:
        tool, _, seconds = value.rpartition("=")
        if tool and tool not in TOOLS:
            raise InputError(f"--tool-timeout {value}: no tool {tool!r}; the tools are {', '.join(TOOLS)}")
        try:
            number = float(seconds)
        except ValueError:
            number = -1.0
        if not number > 0:
            raise InputError(f"--tool-timeout {value}: give seconds above 0, as 300 or explain=60")
        timeouts.update({tool: number} if tool else dict.fromkeys(TOOLS, number))
    return timeouts


class Stopped(Exception):
    """A tool past its time, stopped at its next step."""


class StopSwitch:
    """A long tool's way to stop between steps: once it has committed to writing its outputs, a
    timeout waits for it to finish instead (the outputs are then whole, and the call's result)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requested = False
        self.committed = False

    def request(self) -> bool:
        """Ask the work to stop; False when it is past the point of no return."""
        with self._lock:
            self.requested = not self.committed
            return self.requested

    def check(self) -> None:
        if self.requested:
            raise Stopped()

    def commit(self) -> None:
        with self._lock:
            self.check()
            self.committed = True


_PYDANTIC_PROBLEM = re.compile(
    r"^\s+(?P<msg>.+?) \[type=[^,\]]+(?:, input_value=(?P<value>.*?))?(?:, input_type=\w+)?\]$"
)


def one_line_arguments_error(text: str) -> str:
    """The SDK's report of arguments that fail the tool's schema (pydantic's several lines) as one
    line naming each field: ``Error executing tool T: pos: Input should be ... (got 0)``."""
    head, _, rest = text.partition("\n")
    if not rest or "validation error" not in head:
        return text if not rest else head
    problems, field = [], None
    for line in rest.splitlines():
        match = _PYDANTIC_PROBLEM.match(line)
        if match and field is not None:
            got = f" (got {match['value'][:40]})" if match["value"] is not None else ""
            problems.append(f"{field}: {match['msg']}{got}")
            field = None
        elif line and not line.startswith(" "):
            field = line.strip()
    prefix = head.partition(": ")[0]
    return f"{prefix}: {'; '.join(problems) or head}; see the tool's input schema"


class OneLineErrors:
    """Server middleware: a tool error's text is one line (the schema check's included)."""

    async def __call__(self, ctx, call_next):
        result = await call_next(ctx)
        if ctx.method == "tools/call" and isinstance(result, dict) and result.get("isError"):
            for part in result.get("content") or []:
                if part.get("type") == "text" and "\n" in part.get("text", ""):
                    part["text"] = one_line_arguments_error(part["text"])
        return result


def checked(**sequences: str) -> dict[str, str]:
    """The tool's DNA arguments upper-cased (spaces and line ends dropped, as pasted text has
    them), or a tool error naming the argument and the base."""
    try:
        return {
            name: clean_sequence("".join(seq.split()), where="input", field=name) for name, seq in sequences.items()
        }
    except RecordError as e:
        raise ToolError(first_line(e)) from None


class DataRoot:
    """The folder the VCF tools may read and write; nothing outside it (``..`` and links resolved)."""

    def __init__(self, root: str | Path | None):
        self.root = Path(os.path.realpath(root)) if root else None

    def inside(self, path: str, what: str) -> Path:
        if self.root is None:
            raise PermissionError(
                f"{what}: this server was started without --data-root, so it reads and writes no files"
            )
        if "\x00" in path or not path.strip():
            raise InputError(f"{what} {path!r}: not a file name")
        given = Path(path)
        full = Path(os.path.realpath(given if given.is_absolute() else self.root / given))
        if self.root not in full.parents:  # the root itself is a folder, not a file to read or write
            raise PermissionError(
                f"{what} {path!r} is outside the server's --data-root {self.root}; name a file inside it"
            )
        return full


def model_card(model, checkpoint: Path) -> dict:
    """What an assistant needs to know of the model: its parts, labels and last measured scores."""
    from dnallm.data.labels import LabelSet

    recipe = model.recipe
    train = Path(recipe.data.train) if recipe.data.train else None
    labels = LabelSet.from_jsonl(train).labels if train and train.is_file() else []
    state = checkpoint / "trainer_state.json"
    history = json.loads(state.read_text()).get("history", []) if state.is_file() else []
    metrics = {k: v for entry in history for k, v in entry.items() if k != "step"}
    eval_file = checkpoint.parent / "eval" / "metrics.json"
    if eval_file.is_file():
        metrics["eval"] = json.loads(eval_file.read_text())
    return {
        "name": recipe.run_name,
        "checkpoint": str(checkpoint),
        "encoder": recipe.encoder.name_or_path,
        "encoder_layer": recipe.encoder.layer,
        "llm": recipe.llm.name_or_path,
        "dna_window": recipe.data.dna_window,
        "reads_dna": recipe.data.use_dna,
        "labels": labels,
        "metrics": metrics,
    }


def create_mcp(
    model,
    checkpoint: Path,
    *,
    fasta: str | None = None,
    data_root=None,
    timeouts: dict | None = None,
    overrides: list[str] | tuple = (),
):
    """The MCP server over a loaded ``dnallm.Model`` (its tools run one at a time); ``overrides``:
    the recipe keys it was loaded with (``annotate_vcf``'s progress log records them, so that
    ``dnallm annotate`` with the same overrides goes on from it)."""
    server = MCPServer(
        "dnallm",
        middleware=[OneLineErrors()],
        instructions=(
            f"A DNA language model ({model.recipe.run_name}): it reads a reference and a variant DNA window "
            f"({model.recipe.data.dna_window} bp, centred on the variant) and answers a question about the variant "
            "with 'Answer: <label>'. Read dnallm://model-card for its labels and scores."
        ),
    )
    timeouts = {**parse_timeouts(), **(timeouts or {})}
    lock = threading.Lock()
    root = DataRoot(data_root)
    genome = {"fasta": None}

    async def call(name: str, work, stop: StopSwitch | None = None):
        """``work()`` in a worker thread under the model's lock, within the tool's timeout (the wait
        for the lock included). A call given up on (timeout, or the client cancelling it) that is
        still waiting for the lock never runs; one running stops at its next step when it has
        steps (``stop``), unless it is already writing its outputs, which it then finishes and
        returns. Errors come back as tool errors of one line."""
        deadline = time.monotonic() + timeouts[name]
        finished, abandoned, box = threading.Event(), threading.Event(), {}

        def locked():
            try:
                if not lock.acquire(timeout=max(deadline - time.monotonic(), 0)):
                    raise TimeoutError()
                try:
                    if abandoned.is_set():
                        raise Stopped()
                    box["result"] = work()
                except BaseException as e:
                    box["error"] = e
                    raise
                finally:
                    lock.release()
                return box["result"]
            finally:
                finished.set()

        def give_up() -> bool:
            """True when the work stops (or never starts); False when it is writing its outputs."""
            abandoned.set()
            return stop is None or stop.request()

        try:
            try:
                with anyio.fail_after(max(deadline - time.monotonic(), 0)):
                    return await anyio.to_thread.run_sync(locked, abandon_on_cancel=True)
            except TimeoutError:
                if give_up():
                    raise
                await anyio.to_thread.run_sync(finished.wait)  # writing its outputs: let it finish
                if "error" in box:
                    raise box["error"] from None
                return box["result"]
            except anyio.get_cancelled_exc_class():
                give_up()  # the client cancelled the call: nobody reads what it would write
                raise
        except TimeoutError:
            raise ToolError(
                f"stopped after {timeouts[name]:g} s (the server's --tool-timeout for {name}); ask for less "
                f"(a smaller region, fewer sequences) or start the server with --tool-timeout {name}=SECONDS"
            ) from None
        except Stopped:
            raise ToolError(f"stopped before it finished; call {name} again") from None
        except Exception as e:
            error = tool_error(e)
            if error is None:
                raise
            raise error from None

    def reference_genome():
        if not fasta:
            raise InputError("this server was started without --fasta: start it with --fasta GENOME.fa")
        if genome["fasta"] is None:
            from dnallm.data.vcf import open_fasta

            genome["fasta"] = open_fasta(fasta)
        return genome["fasta"]

    def predicted(prediction) -> dict:
        return {"label": prediction.label, "probability": prediction.probability, "reply": prediction.reply}

    @server.tool()
    async def ask(
        question: Annotated[str, Field(description="The question about the variant, e.g. 'Which disease?'")],
        reference: Annotated[str, Field(description="Reference DNA window (A, C, G, T, N), centred on the variant")],
        variant: Annotated[str, Field(description="The same window carrying the variant")],
    ) -> dict:
        """Ask the model a question about a variant, given its reference and variant DNA windows
        (longer sequences are cut to the model's window around their centre). Returns the reply,
        the label it names and the model's probability of that label."""
        dna = checked(reference=reference, variant=variant)
        record = {"question": question, "reference_sequence": dna["reference"], "variant_sequence": dna["variant"]}
        return await call("ask", lambda: predicted(model.predict([record])[0]))

    @server.tool()
    async def predict_variant(
        chrom: Annotated[str, Field(description="Chromosome as the server's reference FASTA names it, e.g. chr17")],
        pos: Annotated[int, Field(description="1-based position of REF's first base, as in a VCF", ge=1)],
        ref: Annotated[str, Field(description="Reference allele, e.g. C", min_length=1)],
        alt: Annotated[str, Field(description="Alternate allele, e.g. T", min_length=1)],
        question: Annotated[str | None, Field(description="The question; default: the annotation's own")] = None,
    ) -> dict:
        """Predict a variant given as a VCF line would give it: the windows are cut from the server's
        reference genome as `dnallm annotate` cuts them. Returns the variant, the two windows, the
        label, its probability and the reply."""

        def work():
            from dnallm.data.vcf import Allele, classify_alt
            from dnallm.data.windows import WindowOptions, allele_pair, render_question, screen_pair

            fa = reference_genome()
            if chrom not in fa.references:
                raise InputError(f"chromosome {chrom!r} is not in {fasta} (it has {', '.join(fa.references[:5])}...)")
            found = fa.fetch(chrom, pos - 1, pos - 1 + len(ref)).upper()
            if found != ref.upper():
                raise InputError(f"{chrom}:{pos}: REF {ref!r} does not match the reference genome there ({found!r})")
            allele = Allele(1, 1, chrom, pos, ".", ref.upper(), alt.upper(), contig=chrom)
            skip, detail = classify_alt(allele.ref, allele.alt)
            if skip:
                raise InputError(f"{allele.variant_id}: ALT {alt!r} is not a sequence to read ({skip}: {detail})")
            opts = WindowOptions(crop=model.recipe.data.dna_window)
            pair = allele_pair(fa, allele, opts)
            skip, detail = screen_pair(pair, opts)
            if skip:
                raise InputError(f"{allele.variant_id}: cannot be read ({detail})")
            asked = question or render_question(None, allele, "")
            record = {"question": asked, "reference_sequence": pair.reference, "variant_sequence": pair.variant}
            windows = {"reference": pair.reference, "variant": pair.variant}
            return {
                "variant": allele.variant_id,
                "question": asked,
                "windows": windows,
                **predicted(model.predict([record])[0]),
            }

        return await call("predict_variant", work)

    @server.tool()
    async def annotate_vcf(
        vcf: Annotated[
            str, Field(description="VCF under the server's --data-root (a path relative to it, or absolute)")
        ],
        out: Annotated[str, Field(description="Annotated VCF to write under --data-root (.vcf or .vcf.gz)")],
        ctx: Context,
        overwrite: Annotated[
            bool, Field(description="Replace an annotated VCF, TSV or plot already at that name")
        ] = False,
    ) -> dict:
        """Annotate every ALT allele of a VCF on the server's reference genome: label and probability
        as INFO fields, a TSV and a plot beside the output. Reports progress; a call stopped (by the
        timeout, or cancelled) writes nothing and goes on from where it stopped when made again."""
        from dnallm.eval.annotate import annotate
        from dnallm.fusion.pretrained import Pretrained

        from dnallm.eval.annotate import output_paths

        try:
            src, dest = root.inside(vcf, "vcf"), root.inside(out, "out")
            written, tsv, _ = output_paths(dest, None)
        except (PermissionError, InputError) as e:
            raise ToolError(first_line(e)) from None
        there = [p.name for p in (written, tsv, tsv.with_suffix(".png")) if p.exists()]
        if there and not overwrite:
            raise ToolError(f"{', '.join(there)} already in {dest.parent}: name another out, or pass overwrite=true")
        stop = StopSwitch()

        def progress(done: int, total: int) -> None:
            if done < total:
                stop.check()
            else:
                stop.commit()  # all computed: from here on it writes, and finishes
            try:
                anyio.from_thread.run(ctx.report_progress, done, total)
            except Exception:
                if done == total:
                    return  # a client gone while the outputs are written: they are written all the same
                raise

        def work():
            stop.check()
            s = model.session
            loaded = Pretrained(s.model, s.processor, s.encoder, s.recipe, checkpoint, s.device)
            reference_genome()  # the FASTA named, before any work
            return annotate(checkpoint, src, fasta, dest, loaded=loaded, on_progress=progress, overrides=overrides)

        summary = await call("annotate_vcf", work, stop)
        keys = ("out", "tsv", "plot", "alleles", "annotated", "skipped", "labels", "batches_resumed")
        return {k: summary[k] for k in keys}

    @server.tool()
    async def explain(
        question: Annotated[str, Field(description="The question whose answer to explain")],
        reference: Annotated[str, Field(description="Reference DNA window")],
        variant: Annotated[str, Field(description="Variant DNA window")],
        region: Annotated[
            str | None, Field(description="A width centred on the variant ('64') or window positions 'START-END'")
        ] = None,
        label: Annotated[str | None, Field(description="The label to explain (default: the model's answer)")] = None,
    ) -> list:
        """Which bases move the model's answer: per-base importance of each window over a region (in
        silico mutagenesis up to 256 bp, gradient x input above), as numbers and as a PNG track."""

        dna = checked(reference=reference, variant=variant)

        def work():
            import matplotlib.pyplot as plt

            from dnallm.serve.protocol import explain_response

            e = model.explain(dna["reference"], dna["variant"], question, label=label, region=region)
            buffer = io.BytesIO()
            figure = e.plot()
            try:
                figure.savefig(buffer, format="png")
            finally:
                plt.close(figure)
            return [json.dumps(explain_response(e)), Image(data=buffer.getvalue(), format="png")]

        return await call("explain", work)

    @server.tool()
    async def embed(
        sequences: Annotated[list[str], Field(description="DNA sequences", min_length=1, max_length=256)],
        pool: Annotated[Literal["mean", "max", "last"], Field(description="how positions are pooled")] = "mean",
    ) -> dict:
        """Frozen-encoder embeddings of DNA sequences (the layer the model reads), one vector each."""
        from dnallm.api import embed as embed_sequences

        sequences = list(checked(**{f"sequences[{i}]": seq for i, seq in enumerate(sequences)}).values())

        def work():
            from dnallm.encoders import DNAEncoder

            encoder = model.session.encoder
            if not isinstance(encoder, DNAEncoder):
                raise InputError(
                    "this model has no live DNA encoder to embed with (text-only, or trained on cached "
                    "embeddings): embed with `dnallm embed ENCODER` instead"
                )
            vectors = embed_sequences(encoder, sequences, layer=encoder.layer, pool=pool)
            return {"layer": encoder.layer, "shape": list(vectors.shape), "embeddings": vectors.tolist()}

        return await call("embed", work)

    card_text: list[str] = []

    @server.resource("dnallm://model-card", mime_type="application/json")
    def card() -> str:
        """The model: encoder, LLM, window, label set and metrics."""
        if not card_text:  # read once: the label set comes from the training file
            card_text.append(json.dumps(model_card(model, checkpoint), indent=2))
        return card_text[0]

    return server
