"""The flags several commands share are declared once (aetnet/cli/run_flags.py, model_flags.py): the same flag
has the same help everywhere, and the shortcuts become the key=value settings they always did."""

from __future__ import annotations

from aetnet.cli.main import build_parser
from aetnet.cli.run_flags import run_base, run_overrides

#: Flags that mean the same in each of these commands (and drifted apart while declared in each).
SHARED = [
    ("--data", ("finetune", "compare", "evaluate", "inspect")),
    ("--base", ("finetune", "compare")),
    ("--demo", ("finetune", "compare")),
    ("--on-bad-document", ("finetune", "evaluate", "inspect")),
    ("--revision", ("evaluate", "predict", "serve")),  # the Hub revision read
    ("--revision", ("compare", "export")),  # the branch pushed to
    ("--private", ("compare", "export")),
    ("--links", ("predict", "serve")),
    ("--entity-map", ("predict", "serve")),
    ("--backend", ("predict", "serve")),
    ("--ocr", ("predict", "serve")),
    ("--device", ("predict", "serve")),
    ("model", ("evaluate", "serve")),
]


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return parser, sub.choices


def test_a_flag_shared_by_commands_has_one_help():
    _, commands = _commands()
    for flag, names in SHARED:
        helps = {name: next(a.help for a in commands[name]._actions if flag in (a.option_strings or [a.dest]))
                 for name in names}
        assert len(set(helps.values())) == 1, (flag, helps)
        assert next(iter(helps.values()))


def test_finetune_shortcuts_and_demo_become_settings_in_order():
    parser, _ = _commands()
    args = parser.parse_args(["finetune", "funsd", "train.max_steps=5", "--demo", "--seed", "3", "--bf16",
                              "--box-level", "word", "--on-bad-document", "skip"])
    overrides = run_overrides(args, "--bf16", "--seed", "--stride", "--box-level", "--on-bad-document")
    assert overrides[:8] == ["train.batch_size=4", "train.eval_batch_size=8", "train.learning_rate=1e-3",
                             "train.warmup_ratio=0.05", "train.logging_steps=10", "train.save_steps=40",
                             "aet.queue_size=16", "train.gradient_accumulation_steps=1"]
    # the demo's step count first, then the flags, then the user's key=value (later wins)
    assert overrides[8:] == ["train.max_steps=80", "train.bf16=True", "train.seed=3", "data.box_level=word",
                             "data.on_bad_document=skip", "train.max_steps=5"]
    assert run_base(args) == "tiny"
    args = parser.parse_args(["compare", "cord", "x.y=1", "--base", "b"])
    assert run_overrides(args) == ["x.y=1"] and run_base(args) == "b"


def test_the_parser_kept_between_calls_parses_as_a_fresh_one():
    """main() keeps one parser per process: after parsing other command lines (with overrides, repeated
    flags, list-valued positionals), each line still parses exactly as a newly built parser parses it."""
    from aetnet.cli.main import _parser

    lines = [
        ["finetune", "funsd", "--demo", "train.max_steps=2", "data.max_length=64"],
        ["finetune", "cord"],
        ["inspect", "funsd", "--data", "x", "--json", "data.stride=8"],
        ["inspect", "cord", "--data", "y"],
        ["cache", "clear", "abc", "def"],
        ["cache", "ls"],
        ["predict", "m", "a.png", "b.png", "--backend", "onnx"],
        ["predict", "m", "c.png"],
        ["compare", "funsd", "--strategies", "full,head", "--demo", "train.max_steps=1"],
        ["compare", "funsd", "--demo"],
    ]
    kept = _parser()
    for _ in range(2):
        for line in lines:
            got, extra = kept.parse_known_args(line)
            want, want_extra = build_parser().parse_known_args(line)
            assert vars(got) == vars(want) and extra == want_extra, line
    assert _parser() is kept
