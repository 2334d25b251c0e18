"""The coverage-track recipe: YAML sections as dataclasses, any field overridable as ``section.key=value``."""

from __future__ import annotations

from dataclasses import dataclass, field

from dnallm.config import RecipeBase, load_recipe

AUTOSOMES = [f"chr{i}" for i in range(1, 23)]


@dataclass
class TrackDataConfig:
    fasta: str = ""
    tracks: str = ""  # track sheet (YAML or TSV)
    bigwig_contigs: str = "same"  # FASTA -> bigWig contig names: same | add_chr | strip_chr
    strict_contigs: bool = True  # every bigWig contig must be in the FASTA
    chroms: list = field(default_factory=lambda: list(AUTOSOMES))
    val_chroms: list = field(default_factory=list)
    test_chroms: list = field(default_factory=list)
    val_regions: str = ""  # BED of held-out regions (on top of, or instead of, val_chroms)
    test_regions: str = ""
    window: int = 32768
    overlap: int = 16384
    max_n_fraction: float = 0.5  # skip windows with more N than this
    rc_augment: bool = True
    num_workers: int = 2


@dataclass
class TargetConfig:
    power: float = 0.75
    clip: float = 384.0  # soft clip threshold in transformed units; 0: none


@dataclass
class TrunkConfig:
    name_or_path: str = "BGI-HangzhouAI/Genos-1.2B"
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False


@dataclass
class HeadConfig:
    channels: list = field(default_factory=lambda: [256, 64])
    kernel_size: int = 5
    dropout: float = 0.1


@dataclass
class TrackTrainConfig:
    epochs: float = 60.0
    max_steps: int = 0  # > 0 overrides epochs
    micro_batch_size: int = 1
    global_batch_size: int = 256  # micro_batch_size x grad_accum x ranks; 0: use grad_accum
    grad_accum: int = 1  # used when global_batch_size is 0
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    log_every: int = 10
    save_every: int = 0  # optimizer steps; 0: only at the end
    keep_last: int = 2
    report_to: list = field(default_factory=list)  # tensorboard, wandb
    resume_from_checkpoint: str = ""  # path, or "auto" for the latest in output_dir


@dataclass
class TrackEvalConfig:
    batch_size: int = 4  # windows per forward at prediction
    max_val_windows: int = 512  # validation at each checkpoint: N held-out windows, evenly spaced
    validate_at_start: bool = True  # also before the first step: the untrained baseline
    stitch: str = "centre"  # centre | mean
    bin_size: int = 32  # binned Pearson; 0: none


@dataclass
class CoverageRecipe(RecipeBase):
    run_name: str = "coverage"
    output_dir: str = "runs/coverage"
    seed: int = 42
    deepspeed: str = ""  # path to a DeepSpeed JSON; empty: plain PyTorch
    data: TrackDataConfig = field(default_factory=TrackDataConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    encoder: TrunkConfig = field(default_factory=TrunkConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrackTrainConfig = field(default_factory=TrackTrainConfig)
    eval: TrackEvalConfig = field(default_factory=TrackEvalConfig)


def load_coverage_recipe(path=None, overrides=()) -> CoverageRecipe:
    return load_recipe(path, overrides, cls=CoverageRecipe)
