"""digits-10, the concept "zero" forgotten by a small text-to-image model: the offline pipeline.

Reproduces: the text-conditional demo of docs/generation.md, the release's Stable
Diffusion class-forgetting recipe at a size that runs on a 2-core CPU. scikit-learn's 8x8
digits (1,437 training images) in [-1, 1], each image captioned by one of its class's
training prompts ("seven", "a handwritten seven", "the digit 7", "a picture of the number
seven", ...), drawn afresh every epoch. The training templates put the class word at
every position (0 to 5) where the paraphrases and held-out prompts have it: the text
encoder is causal with learned position embeddings, and with the word at position 2 only
(an earlier version) the original drew a 0 for 2.7 % of zero's paraphrases. The
project's SD UNet (channels 8, 16, 16; cross-attention at every level but the lowest, as
in SD; one layer per block) conditioned on the project's CLIP text encoder (2 layers,
width 32), 0.12 M parameters in all, trained jointly from scratch over a word vocabulary
of the training prompts, prompt dropout 0.1 for classifier-free guidance; T = 200 linear
betas; Adam 2e-3, clip 1, batch 64, 1,500 steps, for the original (every digit) and the
retrain oracle (no zeros); 1,000 steps left the original drawing a 0 for only 39 % of
its own zero prompts' samples. The judge: a DigitsCNN (SGD 0.05, 10 epochs).

Scissorhands (the release's class recipe): saliency of the guided loss (s = 8.5, the
release's (1 + 7.5) eps_c - 7.5 eps_null) on the zero prompts, global top-k at sparsity
0.99, truncated-normal re-init of the self-attention (attn1) of the second transformer
of up blocks 1 and 2 (the release's output_blocks 4 and 7), then Adam 3e-4 on
L_r - 0.1 L_f over the UNet for 150 steps (the text encoder kept, as in SD). FT: Adam on
the retained digits, the same 150 steps. These settings were not tuned for this model.

Evaluation: per_class (100) DDIM-20 samples (guidance 2) for each of zero's three prompt
sets and for each other digit, the prompts of a set taking turns, plus grid_per_class (4)
samples of each prompt the grid shows, the same initial noise for every model; the share
of samples the judge calls 0 under zero's training prompts, its paraphrases (templates
trained only with the other digits) and its held-out prompts (never trained with any
digit, built from known words); the other digits' accuracy and the Frechet distance on
the judge's features; grid.png (rows = model, columns = prompt).

Commands (add --smoke to each for a run of seconds):
  C=digits_text_zero RUN=runs/digits_text_zero
  scissorhands diffusion-train $C --out $RUN
  scissorhands diffusion-unlearn $C --run $RUN --method scissorhands
  scissorhands diffusion-unlearn $C --run $RUN --method finetune
  scissorhands diffusion-evaluate $C --run $RUN

Expected: 9.7 min in all on a 2-core CPU with no other job and the compilation cache off
(train 338 s, unlearn 86 + 42 s, evaluate 114 s; 8.6 min in an earlier run with the cache on,
shared with other jobs); zero share under the training prompts,
paraphrases and held-out prompts: 100, 100, 100 % (original), 0, 1, 0 % (retrain),
0, 0, 0 % (Scissorhands), 100, 99, 99 % (FT); docs/generation.md has the table.
"""

DDPM = {"steps": 1500, "lr": 0.002, "batch_size": 64, "ema_decay": None}
TEXT_UNET = {
    "block_out_channels": [8, 16, 16],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "attention_head_dim": 2,
    "norm_num_groups": 4,
}
ATTN1 = r"^unet/up_blocks_[12]/attentions_1/transformer_blocks_0/attn1/"
CONFIG = {
    "diffusion": {"schedule": {"num_timesteps": 200, "beta_start": 0.0005, "beta_end": 0.1}},
    "data": {"name": "digits10"},
    "text": {
        "names": [
            ["zero", "nought"],
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
        ],  # fmt: skip
        # the class word at every position (0 to 5) that the other two sets use
        "templates": [
            "{name}",
            "a {name}",
            "a handwritten {name}",
            "the digit {digit}",
            "the number {name}",
            "the handwritten digit {digit}",
            "a picture of a {name}",
            "a picture of the number {name}",
            "{name} written by hand",
        ],
        "paraphrases": ["a drawing of the number {name}", "a sketch of the digit {digit}"],
        "heldout": ["a sketch of a {name}", "a handwritten digit {digit}"],
        "context_length": 6,
        "encoder": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        "unet": TEXT_UNET,
    },
    "train": {**DDPM, "log_every": 250, "checkpoint_every": 750},
    "retrain": {**DDPM, "log_every": 250, "checkpoint_every": 750},
    "classifier": {
        "model": "digits_cnn",
        "epochs": 10,
        "lr": 0.05,
        "milestones": [],
        "batch_size": 64,
        "augment": False,
        "checkpoint_every": 100,
    },
    "sample": {"num_steps": 20, "batch_size": None, "per_class": 100, "grid_per_class": 4},
    "scissorhands": {
        "sparsity": 0.99,
        "saliency_guidance": 8.5,
        "reinit": "trunc_normal",
        "eligible": ATTN1,
        "trainable": "^unet/",
        "lam": 0.1,
        "lr": 0.0003,
        "steps": 150,
        "batch_size": 64,
    },
    "finetune": {"steps": 150, "batch_size": 64},
}

SMOKE_DDPM = {"steps": 4, "log_every": 2, "checkpoint_every": 2}
SMOKE = {
    "train": SMOKE_DDPM,
    "retrain": SMOKE_DDPM,
    "classifier": {"epochs": 1},
    "sample": {"num_steps": 3, "per_class": 2, "grid_per_class": 2},
    **{name: {"steps": 2} for name in ("scissorhands", "scissorhands_anchor", "salun", "finetune")},
}
