"""``python -m aetnet`` (so ``torchrun -m aetnet finetune ...`` works)."""

from aetnet.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
