"""``dnallm chat``: ask a trained model about a variant in the terminal, replies streaming.

The DNA pair stays set until ``/dna`` changes it (which starts a new conversation);
every question is a turn of one conversation until ``/reset``.
"""

from __future__ import annotations

import sys

from dnallm.data.chat import parse_answer
from dnallm.data.dna import RecordError
from dnallm.serve.inputs import DNAInputError, DNAPair, pair_from_fasta, read_sequence_arg, record_from_jsonl
from dnallm.serve.session import Conversation, ModelSession, Sampling

HELP = """\
Commands:
  /dna                 set the reference and variant: for each, paste the bases or give a
                       FASTA path, then an empty line
  /dna FILE.fasta      two FASTA records: reference, then variant
  /dna FILE.jsonl N    record N (0-based) of a KEGG-format JSONL file
  /reset               forget the conversation, keep the DNA
  /help                this text
  /quit                leave (Ctrl-D too)
Anything else is a question about the current variant. Ctrl-C stops a reply."""


class ChatREPL:
    def __init__(self, session: ModelSession, sampling: Sampling, max_dna_length: int, stdin=None, stdout=None):
        self.session = session
        self.sampling = sampling
        self.max_dna_length = max_dna_length
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.dna: DNAPair | None = None
        self.turns: list[dict] = []

    def say(self, text: str = "", end: str = "\n") -> None:
        self.stdout.write(text + end)
        self.stdout.flush()

    def read(self, prompt: str) -> str | None:
        """One line, or None at end of input."""
        if self.stdin is sys.stdin and sys.stdin.isatty():
            try:
                return input(prompt)
            except EOFError:
                return None
        self.say(prompt, end="")
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    def run(self) -> None:
        self.say(f"dnallm chat with {self.session.name}; /help for commands.")
        if self.session.uses_dna and self.dna is None:
            self.say("No DNA yet: set it with /dna.")
        while True:
            try:
                line = self.read("you> ")
            except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line; Ctrl-D or /quit leaves
                self.say()
                continue
            if line is None:
                self.say()
                return
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return
            else:
                self.ask(line)

    def command(self, line: str) -> bool:
        """Run a /command; False means quit."""
        name, *args = line.split()
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            self.say(HELP)
        elif name == "/reset":
            self.turns = []
            self.say("Conversation cleared (DNA kept).")
        elif name == "/dna":
            self.dna_command(args)
        else:
            self.say(f"unknown command {name}; /help lists them")
        return True

    def dna_command(self, args: list[str]) -> None:
        try:
            if not args:
                reference, variant = self.read_block("reference"), self.read_block("variant")
                if reference is None or variant is None:
                    return
                reference, variant = read_sequence_arg(reference), read_sequence_arg(variant)
            else:
                reference, variant = load_pair(args)
            self.set_dna(reference, variant)
        except (DNAInputError, RecordError, OSError, ValueError) as e:
            self.say(f"error: {e}")

    def read_block(self, field: str) -> str | None:
        """Lines up to an empty one, joined: a pasted sequence may span lines."""
        self.say(f"{field} (bases or FASTA path; end with an empty line):")
        lines = []
        while (line := self.read("")) is not None and line.strip():
            lines.append(line.strip())
        return "".join(lines) if lines else None

    def set_dna(self, reference: str, variant: str) -> None:
        self.dna = self.session.prepare_dna(reference, variant, self.max_dna_length)
        self.turns = []
        window = len(self.dna.reference)
        self.say(
            f"DNA set: reference {self.dna.reference_bp} bp, variant {self.dna.variant_bp} bp "
            f"(model reads the central {window} bp). New conversation."
        )

    def ask(self, question: str) -> None:
        if self.session.uses_dna and self.dna is None:
            self.say("Set the DNA first: /dna (see /help).")
            return
        conv = Conversation(
            self.turns + [{"role": "user", "content": question}], self.dna if self.session.uses_dna else None
        )
        pieces, stream = [], self.session.stream(conv, self.sampling)
        self.say("model> ", end="")
        try:
            for piece in stream:
                pieces.append(piece)
                self.say(piece, end="")
        except KeyboardInterrupt:
            stream.close()  # cancels the generation
            self.say("\n[stopped; this turn is not kept]")
            return
        except RuntimeError as e:
            self.say(f"\nerror: {e}")
            return
        reply = "".join(pieces)
        self.say()
        prediction = parse_answer(reply)
        if prediction:
            self.say(f"[predicted disease: {prediction}]")
        self.turns += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]


def load_pair(args: list[str]) -> tuple[str, str]:
    """``FILE.fasta`` or ``FILE.jsonl N`` -> (reference, variant)."""
    if len(args) == 2:
        if not args[1].isdigit():
            raise ValueError(f"record index must be a number, got {args[1]!r}")
        rec = record_from_jsonl(args[0], int(args[1]))
        return rec["reference_sequence"], rec["variant_sequence"]
    if len(args) == 1:
        with open(args[0], encoding="utf-8") as f:
            return pair_from_fasta(f.read(), args[0])
    raise ValueError("usage: /dna, /dna FILE.fasta, or /dna FILE.jsonl N")
