"""`dnallm mcp`: the trained model as MCP tools, driven by the mcp SDK's own client over stdio and
over streamable HTTP. Every tool answers as the Python API does for the same input; a path
outside --data-root, a bad sequence and a tool past its timeout are tool errors of one line,
and the server keeps answering. Traffic goes only to 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import numpy as np
import pysam
import pytest
from mcp import Client, StdioServerParameters
from serve_helpers import request
from vcf_data import cases, other_base, reference_sequences, write_fasta, write_vcf

import dnallm
from dnallm.data.labels import LabelSet
from dnallm.data.vcf import InputError
from dnallm.eval.annotate import annotate
from dnallm.serve.mcp import TOOLS, parse_timeouts

REPO = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> dict:
    """A reference FASTA, and a VCF of two variants on it, inside a data root (and a file outside)."""
    root = tmp_path_factory.mktemp("data-root")
    seqs = reference_sequences()
    fasta = write_fasta(root / "ref.fa", seqs)
    write_vcf(root / "in.vcf", [cases(seqs)["snv"], cases(seqs)["deletion"]])
    outside = tmp_path_factory.mktemp("outside")
    write_vcf(outside / "secret.vcf", [cases(seqs)["snv"]])
    (root / "link.vcf").symlink_to(outside / "secret.vcf")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    c1 = seqs["chr1"]
    many = [("chr1", pos, f"m{pos}", c1[pos - 1], [other_base(c1[pos - 1])]) for pos in range(40, 262, 4)]
    write_vcf(root / "many.vcf", many)
    return {"root": root, "fasta": fasta, "seqs": seqs, "outside": outside / "secret.vcf", "many": len(many)}


@pytest.fixture(scope="module")
def api(checkpoint):
    return dnallm.load(checkpoint, device="cpu")


def server_args(checkpoint, genome, *more) -> list[str]:
    return [
        "-m",
        "dnallm",
        "mcp",
        str(checkpoint),
        "--fasta",
        str(genome["fasta"]),
        "--data-root",
        str(genome["root"]),
        *more,
    ]


def stdio(checkpoint, genome, *more) -> Client:
    params = StdioServerParameters(command=sys.executable, args=server_args(checkpoint, genome, *more), env=ENV)
    return Client(params, read_timeout_seconds=300)


def annotations(vcf: Path) -> list:
    """Each record's label and probability, as the annotated VCF has them."""
    with pysam.VariantFile(str(vcf)) as vin:
        return [(rec.info.get("DNALLM_LABEL"), rec.info.get("DNALLM_PROB")) for rec in vin]


def payload(result) -> dict:
    assert not result.is_error, result.content
    return result.structured_content if result.structured_content is not None else json.loads(result.content[0].text)


def error_text(result) -> str:
    assert result.is_error, result
    [content] = result.content
    assert "\n" not in content.text.strip() and "Traceback" not in content.text, content.text
    return content.text


async def exercise(client: Client, api, genome: dict, test_records: list[dict]) -> dict:
    """Every tool once, compared with the Python API; -> what the calls returned."""
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == set(TOOLS)
    assert all(tool.description and tool.input_schema["properties"] for tool in tools.values())

    rec = test_records[0]
    args = {"question": rec["question"], "reference": rec["reference_sequence"], "variant": rec["variant_sequence"]}
    asked = payload(await client.call_tool("ask", args))
    [want] = api.predict([rec])
    assert (asked["label"], asked["reply"]) == (want.label, want.reply)
    assert asked["probability"] == pytest.approx(want.probability, abs=1e-6)

    seqs = genome["seqs"]
    chrom, pos, _, ref, alts = cases(seqs)["snv"]
    variant = payload(
        await client.call_tool("predict_variant", {"chrom": chrom, "pos": pos, "ref": ref, "alt": alts[0]})
    )
    window = api.recipe.data.dna_window
    start = pos - 1 - window // 2
    reference = seqs[chrom][start : start + window]
    alt_window = reference[: window // 2] + alts[0] + reference[window // 2 + 1 :]
    [want] = api.predict(
        [{"question": variant["question"], "reference_sequence": reference, "variant_sequence": alt_window}]
    )
    assert variant["variant"] == f"{chrom}:{pos}:{ref}:{alts[0]}"
    assert variant["windows"] == {"reference": reference, "variant": alt_window}
    assert (variant["label"], variant["reply"]) == (want.label, want.reply)
    assert variant["probability"] == pytest.approx(want.probability, abs=1e-6)
    text = error_text(
        await client.call_tool("predict_variant", {"chrom": chrom, "pos": pos, "ref": ref, "alt": "<DEL>"})
    )
    assert "ALT '<DEL>' is not a sequence to read (symbolic" in text, text
    # Arguments the schema refuses: one line naming the field.
    text = error_text(await client.call_tool("predict_variant", {"chrom": chrom, "pos": 0, "ref": ref, "alt": "T"}))
    assert "pos: Input should be greater than or equal to 1 (got 0)" in text, text

    # 30 steps teach the reply's form, not always a label: explain the record's own answer.
    explained = await client.call_tool("explain", {**args, "region": "9-24", "label": rec["answer"]})
    assert not explained.is_error, explained.content
    numbers = json.loads(explained.content[0].text)
    image = explained.content[1]
    assert image.mime_type == "image/png" and len(image.data) > 1000
    want = api.explain(
        rec["reference_sequence"], rec["variant_sequence"], rec["question"], label=rec["answer"], region="9-24"
    )
    assert numbers["region"] == [9, 24] and numbers["label"] == want.label
    [ref_track, var_track] = numbers["windows"]
    assert ref_track["bases"] == want.window_bases(0) and var_track["bases"] == want.window_bases(1)
    # float32 sums in another order (the server computes on one thread): 1e-5 of values ~1e-2
    np.testing.assert_allclose(ref_track["importance"], want.importance[0], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(var_track["importance"], want.importance[1], rtol=1e-3, atol=1e-5)

    embedded = payload(await client.call_tool("embed", {"sequences": ["ACGTACGTAA", "GGGCCCAATT"]}))
    want = dnallm.embed(api.session.encoder, ["ACGTACGTAA", "GGGCCCAATT"], layer=api.session.encoder.layer)
    np.testing.assert_allclose(np.array(embedded["embeddings"]), want.numpy(), rtol=1e-5, atol=1e-6)

    card = json.loads((await client.read_resource("dnallm://model-card")).contents[0].text)
    assert card["dna_window"] == window and card["encoder"] == api.recipe.encoder.name_or_path
    assert card["labels"] == LabelSet.from_jsonl(api.recipe.data.train).labels and len(card["labels"]) == 4
    return {"ask": asked, "args": args}


def test_every_tool_over_stdio_answers_as_the_python_api(checkpoint, api, genome, test_records, tmp_path):
    async def main():
        async with stdio(checkpoint, genome) as client:
            first = await exercise(client, api, genome, test_records)
            progress = []

            async def on_progress(done, total, message):
                progress.append((done, total))

            out = genome["root"] / "annotated.vcf"
            summary = payload(
                await client.call_tool(
                    "annotate_vcf", {"vcf": "in.vcf", "out": "annotated.vcf"}, progress_callback=on_progress
                )
            )
            assert summary["out"] == str(out) and summary["alleles"] == 2
            assert progress[0] == (0, 2) and progress[-1] == (2, 2), progress
            # The same annotation as `dnallm annotate` of the same files gives.
            direct = annotate(checkpoint, genome["root"] / "in.vcf", genome["fasta"], tmp_path / "direct.vcf")
            assert (summary["alleles"], summary["annotated"]) == (direct["alleles"], direct["annotated"])
            served, wanted = annotations(out), annotations(tmp_path / "direct.vcf")
            assert [label for label, _ in served] == [label for label, _ in wanted]
            for (_, p_served), (_, p_wanted) in zip(served, wanted):
                assert (p_served is None) == (p_wanted is None)
                assert p_served is None or p_served == pytest.approx(p_wanted, abs=1e-4)
            assert Path(summary["tsv"]).read_text().splitlines()[0] == Path(direct["tsv"]).read_text().splitlines()[0]

            # A file already there is replaced only when asked.
            again = {"vcf": "in.vcf", "out": "annotated.vcf"}
            text = error_text(await client.call_tool("annotate_vcf", again))
            assert "annotated.vcf, annotated.tsv, annotated.png already in" in text and "overwrite=true" in text, text
            assert payload(await client.call_tool("annotate_vcf", {**again, "overwrite": True}))["alleles"] == 2

            # What may not be read or written: outside the root, through '..' or a link; a bad sequence.
            for vcf, out_name in [
                (str(genome["outside"]), "a.vcf"),
                ("../" + genome["outside"].parent.name + "/secret.vcf", "b.vcf"),
                ("link.vcf", "c.vcf"),
                ("in.vcf", "../escaped.vcf"),
                ("in.vcf", str(genome["outside"].parent / "d.vcf")),
                ("in.vcf", "linked/e.vcf"),  # a new file in a linked folder outside
                ("in.vcf", "."),
            ]:
                text = error_text(await client.call_tool("annotate_vcf", {"vcf": vcf, "out": out_name}))
                assert "outside the server's --data-root" in text, text
            assert not (genome["root"].parent / "escaped.vcf").exists()
            assert sorted(p.name for p in genome["outside"].parent.iterdir()) == ["secret.vcf"]
            text = error_text(await client.call_tool("annotate_vcf", {"vcf": "in\x00.vcf", "out": "f.vcf"}))
            assert "not a file name" in text, text
            bad = {"question": "Which disease?", "reference": "ACGTXACGT", "variant": "ACGTAACGT"}
            text = error_text(await client.call_tool("ask", bad))
            assert "field 'reference' has invalid character 'X' at position 4" in text, text
            text = error_text(await client.call_tool("embed", {"sequences": ["ACGT", "ACGU"]}))
            assert "field 'sequences[1]' has invalid character 'U' at position 3" in text, text
            # ... and the server goes on answering as before.
            assert payload(await client.call_tool("ask", first["args"])) == first["ask"]

    anyio.run(main)


def test_a_tool_past_its_timeout_is_an_error_and_the_server_goes_on(checkpoint, api, genome, test_records, tmp_path):
    rec = test_records[0]
    args = {"question": rec["question"], "reference": rec["reference_sequence"], "variant": rec["variant_sequence"]}
    explain = {**args, "region": "1-32", "label": rec["answer"]}
    out = genome["root"] / "timed.vcf"

    async def main():
        limits = ("--tool-timeout", "120", "--tool-timeout", "explain=0.05", "--tool-timeout", "annotate_vcf=0.001")
        async with stdio(checkpoint, genome, *limits) as client:
            text = error_text(await client.call_tool("explain", explain))
            assert "stopped after 0.05 s" in text and "--tool-timeout explain=SECONDS" in text, text
            # The same server answers the next call (after the stopped one has let go of the model).
            asked = payload(await client.call_tool("ask", args))
            assert asked["label"] == api.predict([rec])[0].label
            text = error_text(await client.call_tool("annotate_vcf", {"vcf": "in.vcf", "out": "timed.vcf"}))
            assert "stopped after 0.001 s" in text, text
            assert not out.exists()  # stopped: nothing half-written

    anyio.run(main)
    # What the stopped call leaves is what `dnallm annotate` resumes from (and writes what it writes).
    resumed = annotate(checkpoint, genome["root"] / "in.vcf", genome["fasta"], out)
    direct = annotate(checkpoint, genome["root"] / "in.vcf", genome["fasta"], tmp_path / "direct.vcf")
    assert resumed["annotated"] == direct["annotated"]
    assert [label for label, _ in annotations(out)] == [label for label, _ in annotations(tmp_path / "direct.vcf")]


def test_a_cancelled_annotation_writes_nothing_and_the_next_call_goes_on_from_it(checkpoint, genome, tmp_path):
    """The client cancels mid-run: the server stops at the next allele and writes nothing; the
    same call then reuses the batches computed before and writes what `dnallm annotate` writes."""
    out = genome["root"] / "many.annotated.vcf"
    call = {"vcf": "many.vcf", "out": out.name}
    one_at_a_time = ["-m", "dnallm", "mcp", str(checkpoint), "eval.batch_size=1", *server_args(checkpoint, genome)[4:]]
    params = StdioServerParameters(command=sys.executable, args=one_at_a_time, env=ENV)

    async def main():
        async with Client(params, read_timeout_seconds=300) as client:
            computed = anyio.Event()

            async def on_progress(done, total, message):
                if done >= 3:  # batches of one allele: two or more are in the progress log
                    computed.set()

            async def annotate_all():
                await client.call_tool("annotate_vcf", call, progress_callback=on_progress)
                raise AssertionError("the annotation finished before it was cancelled")

            async with anyio.create_task_group() as group:
                group.start_soon(annotate_all)
                await computed.wait()
                group.cancel_scope.cancel()
            assert not out.exists()
            summary = payload(await client.call_tool("annotate_vcf", call))  # waits for the stopped one
            return summary

    summary = anyio.run(main)
    assert summary["alleles"] == genome["many"] and summary["batches_resumed"] >= 2, summary
    direct = annotate(checkpoint, genome["root"] / "many.vcf", genome["fasta"], tmp_path / "direct.vcf", batch_size=1)
    assert summary["annotated"] == direct["annotated"]
    served, wanted = annotations(out), annotations(tmp_path / "direct.vcf")
    assert [label for label, _ in served] == [label for label, _ in wanted]


def test_bad_timeouts_are_one_line(checkpoint, genome, capsys):
    from dnallm.cli import main

    assert main(server_args(checkpoint, genome, "--tool-timeout", "explian=5")[2:]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "dnallm mcp: error: --tool-timeout explian=5: no tool 'explian'; the tools are "
        "ask, predict_variant, annotate_vcf, explain, embed"
    ]
    for value in ("0", "ask=soon", "explain=-1"):
        with pytest.raises(InputError, match=f"--tool-timeout {value}: give seconds above 0"):
            parse_timeouts([value])
    assert parse_timeouts(["60", "explain=5"]) == {**dict.fromkeys(TOOLS, 60.0), "explain": 5.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_tool_over_streamable_http(checkpoint, api, genome, test_records, tmp_path):
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    limits = ("--api-key", "k-123", "--max-body-bytes", "65536")
    proc = subprocess.Popen(
        [sys.executable, *server_args(checkpoint, genome, "--http", "--port", str(port), *limits)],
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)

        class Server:  # for serve_helpers.request
            api_key = None

        Server.port = port
        listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        status, _, reply = request(Server, "POST", "/mcp", listing)
        assert status == 401 and reply["error"]["code"] == "invalid_api_key"
        # The same guard as `dnallm serve`: the Host a page elsewhere would send, and the body size.
        status, _, reply = request(Server, "POST", "/mcp", listing, key="k-123", headers={"Host": "evil.example"})
        assert status == 400 and reply["error"]["code"] == "host_not_allowed"
        big = {**listing, "params": {"pad": "A" * 70_000}}
        status, _, reply = request(Server, "POST", "/mcp", big, key="k-123")
        assert status == 413 and reply["error"]["code"] == "body_too_large"

        async def main():
            import httpx2

            http = httpx2.AsyncClient(headers={"Authorization": "Bearer k-123"}, timeout=300)
            from mcp.client.streamable_http import streamable_http_client

            async with (
                http,
                Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as client,
            ):
                await exercise(client, api, genome, test_records)

        anyio.run(main)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
