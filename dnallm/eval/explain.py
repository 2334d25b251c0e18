"""Which bases made the answer: per-base attribution of a fusion model's prediction.

The answer's score is the log-probability of its label tokens (the text after the reply's
last ``Answer:``), given the prompt and the reply before the label, read by teacher forcing:
one forward pass per input, nothing generated (``DNAFusionLM.token_logps``). Two methods:

- ``ism``, in-silico mutagenesis: each base of a region changed to each other base; the score
  of a mutation is the change of the label's log-probability. The pair's difference is what
  the model reads as the variant, so a flank base is changed in both windows ("the genome had
  another base here": the variant still changes what it changed), and a base the variant
  changed in its own window only (another reference or another variant allele). Changing a
  flank base in one window alone would make a second variant, and the model, which aligns
  the windows and reads the change, would read another change altogether. The frozen encoder
  runs once per mutated window; an unmutated window's encoding and the prompt's text are
  reused.
- ``gradient``, gradient × input: one forward and one backward pass for the whole window,
  through the frozen encoder to its one-hot input where it reads one token per base (each
  base's input embedding row), else on its per-position output embeddings.

``importance`` (window, position) is how much a base moves the answer: the mean absolute
change of the label's log-probability over the three substitutions (ISM), or the magnitude of
the gradient × input at the base present. Magnitudes, because a model reads a planted motif
as much from the bases whose change raises a rival label as from those whose change lowers
its own; ``scores`` keeps the signs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from dnallm.data import chat
from dnallm.data.dna import RecordError, change_span
from dnallm.data.vcf import InputError
from dnallm.eval.answers import label_start, predict_batch
from dnallm.fusion.processor import dna_inputs, pair_inputs, stack_padded
from dnallm.io import file_figures, save_figure

METHODS = ("ism", "gradient")
WINDOWS = ("reference", "variant")
BASES = "ACGT"
DEFAULT_REGION = 64  # bases around the variant that ISM scores unless told otherwise
ISM_MAX_REGION = 256  # wider regions default to gradient x input: ISM costs 6 forwards per base


@dataclass
class Explanation:
    """Per-base attribution of one answer over ``region`` (window positions, 0-based, end exclusive)."""

    where: str
    question: str
    label: str
    label_logp: float  # log p(label tokens | prompt, reply before the label), unmutated
    method: str
    reference: str  # the windows the model read
    variant: str
    region: tuple[int, int]
    scores: np.ndarray  # (2 windows, region bases, 4 bases A C G T): see ``score_semantics``
    genome: tuple[str, int] | None = None  # (contig, 0-based position of reference window base 0), VCF records

    @property
    def importance(self) -> np.ndarray:
        """(2 windows, region bases) >= 0: how much each base moves the answer (the sign is in ``scores``)."""
        if self.method == "ism":
            n_other = np.array([[3 if b in BASES else 4 for b in self.window_bases(w)] for w in range(2)])
            return np.abs(self.scores).sum(-1) / n_other  # mean |change| over the other bases
        return np.abs(self.scores).sum(-1)  # gradient x input sits at the base present

    @property
    def position_importance(self) -> np.ndarray:
        """(region bases,): both windows' importance at each position, summed."""
        return self.importance.sum(0)

    def window_bases(self, window: int) -> str:
        start, end = self.region
        return (self.reference, self.variant)[window][start:end]

    def genome_positions(self, window: int) -> list[int | None]:
        """0-based genome position of each region base of ``window`` (None: an inserted base
        with no reference position, or a record without coordinates)."""
        if self.genome is None:
            return [None] * (self.region[1] - self.region[0])
        offset = self.genome[1]
        if window == 0:
            return [offset + i for i in range(*self.region)]
        (r0, r1), (v0, v1) = change_span(self.reference, self.variant)
        substitution = r1 - r0 == v1 - v0

        def to_reference(v: int) -> int | None:  # left flank, a substitution's bases, right flank
            if v < v0 or (v < v1 and substitution):
                return offset + v + r0 - v0
            return offset + v + r1 - v1 if v >= v1 else None

        return [to_reference(v) for v in range(*self.region)]

    def plot(self, path=None):
        """Sequence-logo-style track: each window's bases, their height the importance. -> the figure
        (written whole to ``path`` and closed when given)."""
        return plot_explanation(self, path)


REGION_HELP = "region {region!r}: give a width in bp (64) or window positions START-END (1-based, e.g. 17-48)"


def check_label(label: str, recipe) -> None:
    """``--label``: one of the labels the checkpoint was trained on, when its training file is there."""
    from dnallm.data.labels import LabelSet

    train = Path(recipe.data.train) if recipe.data.train else None
    if train is None or not train.is_file():
        return
    labels = LabelSet.from_jsonl(train)
    if labels.canonical(label) not in labels:
        shown = ", ".join(labels.labels[:8]) + (f" and {len(labels) - 8} more" if len(labels) > 8 else "")
        raise InputError(f"--label {label!r} is none of the {len(labels)} labels the model was trained on ({shown})")


def parse_region(region: int | str | None, window: int) -> tuple[int, int]:
    """``None`` (the centre 64 bp), a width centred on the variant (cut to the window), or
    ``START-END``: 1-based window positions, inclusive. -> (start, end) 0-based, end exclusive."""
    if region is None:
        region = DEFAULT_REGION
    if isinstance(region, str) and "-" in region.strip().lstrip("-"):
        first, _, last = region.strip().partition("-")
        try:
            start, end = int(first) - 1, int(last)
        except ValueError:
            raise InputError(REGION_HELP.format(region=region)) from None
        if end <= start:
            raise InputError(
                f"region {region}: START is past END; give START-END with START <= END, e.g. {last}-{first}"
            )
        if not 0 <= start < end <= window:
            raise InputError(
                f"region {region}: outside the {window}-bp window (positions 1-{window}); give START-END within it"
            )
        return start, end
    try:
        width = int(region)
    except ValueError:
        raise InputError(REGION_HELP.format(region=region)) from None
    if width < 1:
        raise InputError(f"region {region}: give a width of at least 1 bp")
    width = min(width, window)
    start = window // 2 - width // 2
    return start, start + width


def pick_method(method: str | None, region: tuple[int, int]) -> str:
    """``None``: ISM up to ``ISM_MAX_REGION`` bases, gradient x input above."""
    if method is None:
        return "ism" if region[1] - region[0] <= ISM_MAX_REGION else "gradient"
    if method not in METHODS:
        raise InputError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    return method


def mutations(windows: tuple[str, str], region: tuple[int, int]) -> list[tuple[int, int, int]]:
    """Every (window, position, base index) of ISM: each region base changed to each other base."""
    return [(w, i, b) for w in range(2) for i in range(*region) for b in range(4) if BASES[b] != windows[w][i]]


def mutant_pairs(windows: tuple[str, str], region) -> tuple[list[tuple[str, str]], dict[tuple[int, int, int], int]]:
    """The (reference, variant) pairs ISM scores, and which pair each mutation of ``mutations`` reads.

    A base the variant changed is changed in its own window; a flank base, shared by the two
    windows, is changed in both (the genome had another base there), at the position the
    alignment of the pair gives it in the other window, so that what the variant changes stays
    as it was. An SNV's flank base is then one pair for both windows' rows."""
    spans = change_span(*windows)
    pairs: dict[tuple[str, str], int] = {}
    slots = {}
    for w, i, b in mutations(windows, region):
        pair = list(windows)
        for side, j in aligned_positions(spans, w, i, [len(s) for s in windows]):
            pair[side] = pair[side][:j] + BASES[b] + pair[side][j + 1 :]
        slots[(w, i, b)] = pairs.setdefault(tuple(pair), len(pairs))
    return list(pairs), slots


def aligned_positions(spans, w: int, i: int, lengths: list[int]) -> list[tuple[int, int]]:
    """(window, position) of base ``i`` of window ``w``: itself, and for a flank base the same base
    in the other window, where that window holds it."""
    (s0, s1), (o0, o1) = spans[w], spans[1 - w]
    if s0 <= i < s1:
        return [(w, i)]  # a changed base
    j = i + (o0 - s0) if i < s0 else i + (o1 - s1)
    return [(w, i)] + ([(1 - w, j)] if 0 <= j < lengths[1 - w] else [])


class Explainer:
    """Attribution for one loaded fusion model (``ModelSession``'s parts)."""

    def __init__(self, model, encoder, processor, *, device: str, encoder_batch_size: int):
        self.model, self.encoder, self.processor = model, encoder, processor
        self.device, self.encoder_batch_size = device, encoder_batch_size

    def predicted_replies(self, examples: list[dict], max_new_tokens: int) -> list[str]:
        """The model's own greedy replies, whose label is then explained."""
        encoder = self.encoder if self.processor.uses_dna else None
        preds = predict_batch(
            self.model,
            encoder,
            self.processor,
            examples,
            max_new_tokens=max_new_tokens,
            encoder_batch_size=self.encoder_batch_size,
            device=self.device,
        )
        for ex, pred in zip(examples, preds):
            if not pred.label:
                raise RecordError(
                    f"{ex['where']}: the model's reply has no 'Answer:' line ({pred.reply[:80]!r}); "
                    "name the label to explain (--label / label=)"
                )
        return [pred.reply for pred in preds]

    def target(self, example: dict, reply: str) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Prompt + reply token ids (1, tokens), the label tokens' mask (1, tokens), the label text."""
        tokenizer = self.processor.tokenizer
        prompt = self.processor(example, with_answer=False)["input_ids"]
        reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        first = label_start(tokenizer, reply_ids)
        if first is None:
            raise RecordError(f"{example['where']}: reply {reply[:80]!r} has no 'Answer:' line to score")
        ids = torch.tensor([prompt + reply_ids], device=self.device)
        mask = torch.zeros_like(ids)
        mask[0, len(prompt) + first :] = 1
        return ids, mask, tokenizer.decode(reply_ids[first:], skip_special_tokens=True).strip()

    def label_logps(self, ids: torch.Tensor, mask: torch.Tensor, dna: dict, n: int = 1) -> torch.Tensor:
        """log p(label) for each of ``n`` inputs: the text repeated, one DNA pair each when the
        model reads DNA. (n,)"""
        ids, mask = ids.expand(n, -1), mask.expand(n, -1)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.startswith("cuda")):
            logps = self.model.token_logps(ids, torch.ones_like(ids), mask, **dna)  # (n, tokens)
        return logps.sum(1)

    def explain(
        self, example: dict, reply: str, region: tuple[int, int], method: str, batch_size: int, progress: bool = False
    ) -> Explanation:
        windows = (example["ref_window"], example["var_window"])
        ids, mask, label = self.target(example, reply)
        given = self.pair(windows)  # the windows as given, encoded once: every mutant reuses one of them
        with torch.no_grad():
            label_logp = float(self.label_logps(ids, mask, given))
        scores = (
            self.ism(windows, given, ids, mask, label_logp, region, batch_size, progress)
            if method == "ism"
            else self.gradient(windows, ids, mask, region)
        )
        return Explanation(example["where"], example["question"], label, label_logp, method, *windows, region, scores)

    def pair(self, windows) -> dict:
        return dna_inputs(self.encoder, list(windows), self.encoder_batch_size) if self.processor.uses_dna else {}

    @torch.no_grad()
    def ism(
        self, windows, given: dict, ids, mask, label_logp: float, region, batch_size: int, progress: bool
    ) -> np.ndarray:
        pairs, slots = mutant_pairs(windows, region)
        scores = np.zeros((2, region[1] - region[0], 4), dtype=np.float32)
        logps = np.zeros(len(pairs), dtype=np.float32)
        batches = range(0, len(pairs), batch_size)
        for start in tqdm(batches, desc="ISM", unit="batch", disable=not progress, leave=False):
            chunk = pairs[start : start + batch_size]
            dna = self.mutant_inputs(windows, given, chunk)
            logps[start : start + len(chunk)] = self.label_logps(ids, mask, dna, len(chunk)).float().cpu().numpy()
        for (w, i, b), k in slots.items():
            scores[w, i - region[0], b] = logps[k] - label_logp
        return scores

    def mutant_inputs(self, windows, given: dict, chunk: list[tuple[str, str]]) -> dict:
        """DNA inputs of the mutant pairs: only their mutated windows encoded, the rest reused."""
        if not given:
            return {}  # a text-only model: the prompt alone, the same for every mutation
        changed = [
            (k, side, pair[side]) for k, pair in enumerate(chunk) for side in range(2) if pair[side] != windows[side]
        ]
        # (n, positions, hidden): the only encoder run, on the mutated windows alone
        embeds, mask = self.encoder.encode([seq for _, _, seq in changed])
        row = {(k, side): n for n, (k, side, _) in enumerate(changed)}
        rows_e, rows_m = [], []
        for k in range(len(chunk)):
            for side in range(2):
                n = row.get((k, side))
                rows_e.append(given["dna_embeds"][side : side + 1] if n is None else embeds[n : n + 1])
                rows_m.append(given["dna_mask"][side : side + 1] if n is None else mask[n : n + 1])
        return pair_inputs([seq for pair in chunk for seq in pair], *stack_padded(rows_e, rows_m))

    def gradient(self, windows, ids, mask, region) -> np.ndarray:
        if not self.processor.uses_dna:
            # The answer's gradient on DNA the model never reads.
            return np.zeros((2, region[1] - region[0], 4), dtype=np.float32)
        base_ids = self.base_token_ids()
        if base_ids is not None:
            return self.one_hot_gradient(windows, ids, mask, region, base_ids)
        return self.embedding_gradient(windows, ids, mask, region)

    def base_token_ids(self) -> list[int] | None:
        """The encoder's token id of each of A, C, G, T when it reads one token per base and can
        take input embeddings (a live model); None otherwise."""
        tokenizer = getattr(self.encoder, "tokenizer", None)
        if getattr(self.encoder, "model", None) is None or tokenizer is None or tokenizer.bases_per_token != 1:
            return None
        ids = tokenizer(list(BASES))
        return ids["input_ids"][:, 0].tolist() if ids["attention_mask"].sum(1).eq(1).all() else None

    def one_hot_gradient(self, windows, ids, mask, region, base_ids: list[int]) -> np.ndarray:
        """Gradient x input on the one-hot input: the label's gradient on each base's input
        embedding row, for every base (positions x 4), centred on the four bases' mean so that
        what the bases share cancels (the one-hot gradient correction of Majdandzic et al.)."""
        batch = self.encoder.tokenizer(list(windows))
        dna_ids, dna_mask = batch["input_ids"].to(self.encoder.device), batch["attention_mask"].to(self.encoder.device)
        table = self.encoder.model.get_input_embeddings().weight  # (vocab, input width)
        inputs = table[dna_ids].detach().requires_grad_(True)  # (2, positions, input width)
        with torch.enable_grad():
            # (2, positions, hidden); a model that takes no mask reads the two windows, of one length, unpadded
            mask_in = dna_mask if self.encoder.takes_mask else None
            embeds = self.encoder.hidden_states(dna_ids, mask_in, inputs_embeds=inputs)
            logp = self.label_logps(ids, mask, pair_inputs(list(windows), embeds, dna_mask)).sum()
            (grad,) = torch.autograd.grad(logp, inputs)
        rows = table[base_ids].detach().float()  # (4, input width)
        per_base = grad.float() @ (rows - rows.mean(0)).T  # (2, positions, 4)
        # (2, positions, 4): 1 at the base present
        present = torch.nn.functional.one_hot(dna_ids.clamp(min=0), table.shape[0])[..., base_ids].float()
        return (per_base * present)[:, region[0] : region[1]].cpu().numpy()

    def embedding_gradient(self, windows, ids, mask, region) -> np.ndarray:
        """Gradient x input on the encoder's per-position embeddings, summed over the hidden size
        (k-mer and BPE encoders: a token of several bases gives each of them its score)."""
        scores = np.zeros((2, region[1] - region[0], 4), dtype=np.float32)
        given = self.pair(windows)
        embeds = given["dna_embeds"].detach().float().requires_grad_(True)  # (2, positions, hidden)
        with torch.enable_grad():
            logp = self.label_logps(ids, mask, {**given, "dna_embeds": embeds.to(given["dna_embeds"].dtype)}).sum()
            (grad,) = torch.autograd.grad(logp, embeds)
        per_position = (grad * embeds).sum(-1).detach().cpu().numpy()  # (2, positions)
        n_positions = given["dna_mask"].sum(1).cpu().numpy()
        for w, seq in enumerate(windows):
            for i in range(*region):
                if seq[i] in BASES:
                    position = i * int(n_positions[w]) // len(seq)
                    scores[w, i - region[0], BASES.index(seq[i])] = per_position[w, position]
        return scores


def ism_work(windows: tuple[str, str], region) -> tuple[int, int]:
    """(forward passes, mutated windows) of ISM over ``region``: 195 and 384 for 64 bp around an SNV."""
    pairs, _ = mutant_pairs(windows, region)
    return len(pairs), sum(pair[side] != windows[side] for pair in pairs for side in range(2))


def ism_cost_line(examples: list[dict], region, batch_size: int) -> str:
    work = [ism_work((ex["ref_window"], ex["var_window"]), region) for ex in examples]
    return (
        f"ISM: {len(examples)} record(s), {sum(w[1] for w in work)} mutated windows in {sum(w[0] for w in work)} "
        f"forward passes (region bases x 3 other bases; a flank base changed in both windows), "
        f"in batches of {batch_size}"
    )


def explain_examples(
    explainer: Explainer,
    examples: list[dict],
    *,
    labels: list[str | None],
    region=None,
    method: str | None = None,
    batch_size: int = 64,
    max_new_tokens: int = 64,
    progress: bool = False,
    genome: list[tuple[str, int] | None] | None = None,
) -> list[Explanation]:
    """One ``Explanation`` per example (``question``, ``ref_window``, ``var_window``, ``where``).

    ``labels[i]``: the label to explain, or None for the model's own answer (greedy, generated
    once per record before any scoring). ISM states its count of forward passes first.
    """
    if batch_size < 1:
        raise InputError(f"batch size {batch_size}: give at least 1")
    window = min(len(s) for ex in examples for s in (ex["ref_window"], ex["var_window"]))
    span = parse_region(region, window)
    method = pick_method(method, span)
    replies = [None if label is None else chat.answer_text(label) for label in labels]
    ask = [i for i, r in enumerate(replies) if r is None]
    for start in range(0, len(ask), batch_size):
        chunk = ask[start : start + batch_size]
        for i, reply in zip(chunk, explainer.predicted_replies([examples[i] for i in chunk], max_new_tokens)):
            replies[i] = reply
    if method == "ism" and progress:
        print(ism_cost_line(examples, span, batch_size), file=sys.stderr)
    out = []
    for i, ex in enumerate(tqdm(examples, desc=f"explaining ({method})", unit="record", disable=not progress)):
        explanation = explainer.explain(ex, replies[i], span, method, batch_size, progress)
        explanation.genome = genome[i] if genome else None
        out.append(explanation)
    return out


# ---- checking attribution where the answer is known ----------------------------------------------


def planted_positions(signal: str, window: int, motif_len: int = 9) -> np.ndarray:
    """(window,) True at the bases that decide a planted record's label (``dnallm planted``): the
    motif centred on the variant (``motif``), or the variant's own base (``centre``, ``substitution``)."""
    if signal not in ("motif", "centre", "substitution"):
        raise ValueError(f"signal {signal!r}: planted positions are known for motif, centre and substitution")
    planted = np.zeros(window, dtype=bool)
    centre = window // 2
    if signal == "motif":
        planted[centre - motif_len // 2 : centre + motif_len // 2 + 1] = True
    else:
        planted[centre] = True
    return planted


def attribution_metrics(explanations: list[Explanation], planted: np.ndarray) -> dict:
    """How well ``position_importance`` finds the ``planted`` window positions, per record:
    ``top_k_hit``, the share of records whose k most important positions (k = planted bases)
    include a planted one, and ``auroc``, planted vs background, averaged over records."""
    from sklearn.metrics import roc_auc_score

    k = int(planted.sum())
    hits, aurocs = [], []
    for e in explanations:
        inside = planted[e.region[0] : e.region[1]]
        order = np.argsort(-e.position_importance, kind="stable")
        hits.append(bool(inside[order[:k]].any()))
        aurocs.append(roc_auc_score(inside, e.position_importance))
    return {"records": len(explanations), "k": k, "top_k_hit": float(np.mean(hits)), "auroc": float(np.mean(aurocs))}


# ---- outputs -----------------------------------------------------------------------------------

TSV_COLUMNS = (
    "record",
    "where",
    "label",
    "method",
    "window",
    "position",
    "chrom",
    "genome_pos",
    "present",
    "base",
    "score",
    "importance",
)


def tsv_rows(index: int, e: Explanation):
    """One row per (window, position, base): ``position`` 1-based in the window, ``genome_pos``
    1-based (empty for an inserted base or a record without coordinates)."""
    importance = e.importance
    for w, name in enumerate(WINDOWS):
        bases, places = e.window_bases(w), e.genome_positions(w)
        for k, (present, place) in enumerate(zip(bases, places)):
            for b, base in enumerate(BASES):
                yield (
                    index,
                    e.where,
                    e.label,
                    e.method,
                    name,
                    e.region[0] + k + 1,
                    e.genome[0] if e.genome else "",
                    "" if place is None else place + 1,
                    present,
                    base,
                    f"{e.scores[w, k, b]:.6g}",
                    f"{importance[w, k]:.6g}",
                )


def genome_track(explanations: list[Explanation], window: int) -> dict[str, dict[int, float]]:
    """contig -> {0-based position: importance} of one window over all records; where windows
    of nearby variants overlap, the value of larger magnitude."""
    track: dict[str, dict[int, float]] = {}
    for e in explanations:
        if e.genome is None:
            continue
        values = track.setdefault(e.genome[0], {})
        for place, value in zip(e.genome_positions(window), e.importance[window]):
            if place is not None and place >= 0 and abs(value) >= abs(values.get(place, 0.0)):
                values[place] = float(value)
    return track


def bedgraph_text(track: dict[str, dict[int, float]]) -> str:
    return "".join(
        f"{contig}\t{pos}\t{pos + 1}\t{value:.6g}\n"
        for contig in sorted(track)
        for pos, value in sorted(track[contig].items())
    )


def write_bigwig(path, track: dict[str, dict[int, float]], sizes: dict[str, int]) -> None:
    """``track`` as a bigWig over a genome of ``sizes`` (contigs in the genome's order), written whole."""
    from dnallm.data.bigwig_writer import BigWigWriter

    missing = sorted(set(track) - set(sizes))
    if missing:
        raise InputError(
            f"contig(s) {', '.join(missing)} of the records are not in the FASTA; give the FASTA the VCF was read with"
        )
    with BigWigWriter(path, sizes) as writer:
        for contig in (c for c in sizes if c in track):
            for pos, value in sorted(track[contig].items()):
                if pos < sizes[contig]:
                    writer.add(contig, pos, np.array([value]))


# ---- the picture ---------------------------------------------------------------------------------

COLOURS = {"A": "#109648", "C": "#255c99", "G": "#f7b32b", "T": "#d62839", "N": "#888888"}


def _letter(ax, letter: str, x: float, height: float) -> None:
    """``letter`` stretched to fill [x - 0.45, x + 0.45] x [0, height]."""
    from matplotlib.patches import PathPatch
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D

    if height <= 0:
        return
    glyph = TextPath((0, 0), letter, size=1, prop={"family": "DejaVu Sans Mono", "weight": "bold"})
    box = glyph.get_extents()
    transform = (
        Affine2D().translate(-box.x0, -box.y0).scale(0.9 / box.width, height / box.height).translate(x - 0.45, 0.0)
    )
    ax.add_patch(PathPatch(transform.transform_path(glyph), color=COLOURS.get(letter, "#888888"), linewidth=0))


def plot_explanation(e: Explanation, path=None):
    plt = file_figures()
    importance = e.importance
    width = e.region[1] - e.region[0]
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.16 * width + 2), 4.2), sharex=True, sharey=True)
    limit = float(np.abs(importance).max()) or 1.0
    centre = len(e.variant) // 2
    for w, ax in enumerate(axes):
        for k, base in enumerate(e.window_bases(w)):
            _letter(ax, base, e.region[0] + k + 1, float(importance[w, k]))
        ax.axhline(0, color="black", linewidth=0.5)
        ax.axvspan(centre + 0.5, centre + 1.5, color="grey", alpha=0.15, linewidth=0)  # the variant's base
        ax.set_ylim(0, 1.1 * limit)
        ax.set_ylabel(f"{WINDOWS[w]}\n" + ("mean |Δ log p|" if e.method == "ism" else "|grad × input|"))
    axes[-1].set_xlim(e.region[0] + 0.5, e.region[1] + 0.5)
    where = f"; base 1 = {e.genome[0]}:{e.genome[1] + 1:,}" if e.genome else ""
    axes[-1].set_xlabel(f"position in the window (1-based){where}")
    method = "in-silico mutagenesis" if e.method == "ism" else "gradient × input"
    fig.suptitle(f"{e.where}: predicted '{e.label}' (log p {e.label_logp:.2f}), {method}", fontsize=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


# ---- ``dnallm explain`` ---------------------------------------------------------------------------


def select_records(path, record: int | None) -> list[dict]:
    from dnallm.data.kegg import read_jsonl

    records = read_jsonl(path)
    if record is None:
        return records
    if not 0 <= record < len(records):
        raise InputError(f"--record {record}: {path} has {len(records)} records (0-{len(records) - 1})")
    return [records[record]]


def output_paths(out, explanations_have_genome: bool, fasta) -> dict[str, object]:
    from pathlib import Path

    out = Path(out)
    paths = {"scores": out / "scores.tsv"}
    if explanations_have_genome:
        for name in WINDOWS:
            paths[f"bedgraph_{name}"] = out / f"importance.{name}.bedGraph"
            if fasta:
                paths[f"bigwig_{name}"] = out / f"importance.{name}.bw"
    return paths


def write_outputs(out, explanations: list[Explanation], *, fasta=None, plots: int = 10) -> dict[str, str]:
    """``scores.tsv``; per window a bedGraph (and with ``fasta`` a bigWig) of importance in genome
    coordinates for records from a VCF; ``plots/record-N.png`` for the first ``plots`` records.
    Every file is written whole."""
    from pathlib import Path

    from dnallm.io import atomic_open, atomic_write_text

    paths = output_paths(out, any(e.genome for e in explanations), fasta)
    with atomic_open(paths["scores"]) as f:
        f.write("\t".join(TSV_COLUMNS) + "\n")
        for index, e in enumerate(explanations):
            f.writelines("\t".join(map(str, row)) + "\n" for row in tsv_rows(index, e))
    sizes = None
    if fasta and "bigwig_reference" in paths:
        from dnallm.data.genome import Genome

        sizes = Genome(fasta).sizes
    for w, name in enumerate(WINDOWS):
        if f"bedgraph_{name}" not in paths:
            continue
        track = genome_track(explanations, w)
        atomic_write_text(paths[f"bedgraph_{name}"], bedgraph_text(track))
        if sizes is not None:
            write_bigwig(paths[f"bigwig_{name}"], track, sizes)
    written = {k: str(v) for k, v in paths.items()}
    for index, e in enumerate(explanations[:plots]):
        path = Path(out) / "plots" / f"record-{index}.png"
        e.plot(path)
        written.setdefault("plots", []).append(str(path))
    return written


def explain_file(
    checkpoint,
    data,
    out,
    *,
    record: int | None = None,
    method: str | None = None,
    region=None,
    batch_size: int = 64,
    label: str | None = None,
    fasta=None,
    plots: int = 10,
    overrides=(),
    device: str | None = None,
    trust_remote_code: bool = False,
) -> dict:
    """``dnallm explain``: attribution for the records of a KEGG-format JSONL (or one of them)."""
    import time

    from dnallm.data.kegg import examples_from_records
    from dnallm.data.windows import window_genome_start
    from dnallm.eval.kegg import max_new_tokens_for
    from dnallm.io import check_outputs
    from dnallm.fusion.model import DNAFusionLM
    from dnallm.fusion.pretrained import read_recipe
    from dnallm.hub import pick_device, resolve_checkpoint

    records = select_records(data, record)
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: give at least 1")
    check_outputs([*output_paths(out, True, fasta).values()], dirs=[out], inputs=[data, fasta])
    window = read_recipe(resolve_checkpoint(checkpoint), overrides).data.dna_window
    # Bad records and a bad region fail before any model loads.
    examples = list(examples_from_records(records, window, need_dna=True, need_answer=False))
    pick_method(method, parse_region(region, window))
    device = device or pick_device()
    loaded = DNAFusionLM.from_pretrained(checkpoint, device, overrides, trust_remote_code=trust_remote_code)
    recipe, encoder, model, processor = loaded.recipe, loaded.dna_source, loaded.model, loaded.processor
    if label is not None:
        check_label(label, recipe)
    tick = time.perf_counter()
    explainer = Explainer(model, encoder, processor, device=device, encoder_batch_size=recipe.encoder.batch_size)
    explanations = explain_examples(
        explainer,
        examples,
        labels=[label] * len(examples),
        region=region,
        method=method,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens_for(recipe, processor.tokenizer)[0],
        progress=True,
        genome=[window_genome_start(rec, window) for rec in records],
    )
    seconds = time.perf_counter() - tick
    files = write_outputs(out, explanations, fasta=fasta, plots=plots)
    first = explanations[0]
    return {
        "records": len(explanations),
        "method": first.method,
        "region": [first.region[0] + 1, first.region[1]],
        "seconds": round(seconds, 2),
        "records_per_s": round(len(explanations) / seconds, 3),
        "files": files,
    }
