"""The declared contracts: ``Task`` (tasks/base.py), ``Strategy`` (strategies/base.py) and ``TaskModel``
(models/task_model.py).

The orchestration code (train/, inference/, export/, predict/, compare/, serve/) calls hooks; it never probes
a task, strategy, model or predictor for one (``hasattr``, or ``getattr`` with a default). The probe check
reads the source, and is itself checked on planted probes. Every hook the runner, evaluation and model
I/O call is declared on the base classes, and the defaults behave as documented.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from aetnet.errors import AetnetError

ROOT = Path(__file__).resolve().parents[1]
ORCHESTRATION = ("train", "inference", "export", "predict", "compare", "serve")
#: Objects aetnet declares contracts for, by the name code gives them (``task``, ``parts.strategy``, ``model``,
#: ``self.entities`` of a pair predictor is a predictor too, but no probe has ever used that name).
CONTRACT_OBJECT = re.compile(r"(^|[._])(task|strategy|model|predictor|backend)$")


def _contract_names() -> set[str]:
    """Every public member of the declared contracts (hooks and attributes)."""
    import aetnet.tasks  # noqa: F401
    from aetnet.models.task_model import TaskModel
    from aetnet.predict.predictor import Predictor
    from aetnet.strategies.base import Strategy
    from aetnet.tasks.base import Task

    return {name for cls in (Task, Strategy, TaskModel, Predictor) for name in vars(cls) if not name.startswith("_")}


def probes(source: str, hooks: set[str]) -> list[tuple[int, str]]:
    """``(line, code)`` of every probe for an optional hook in ``source``.

    A probe is a ``hasattr(obj, name)`` (feature detection of the installed torch, ``hasattr(torch...)``,
    excepted), or a ``getattr(obj, name, default)`` on a task, strategy, model, predictor or backend, or
    reading one of the contracts' member names.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2):
            continue
        target, name = ast.unparse(node.args[0]), node.args[1]
        name = name.value if isinstance(name, ast.Constant) else None
        if node.func.id == "hasattr" and not target.startswith("torch."):
            found.append((node.lineno, ast.unparse(node)))
        elif node.func.id == "getattr" and len(node.args) == 3 and (
                CONTRACT_OBJECT.search(target) and name != "config" or name in hooks):
            # ``getattr(model, "config", None)`` reads transformers' config, not an aetnet contract
            found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def test_no_hook_probing_in_the_orchestration_code():
    hooks = _contract_names()
    found = [f"{path.relative_to(ROOT)}:{line}: {code}"
             for folder in ORCHESTRATION for path in sorted((ROOT / "aetnet" / folder).rglob("*.py"))
             for line, code in probes(path.read_text(), hooks)]
    assert not found, "probes for optional hooks (declare the hook with a default instead):\n" + "\n".join(found)


def test_the_probe_check_catches_planted_probes():
    hooks = _contract_names()
    planted = '''
if hasattr(ctx.strategy, "check_config"):
    ctx.strategy.check_config(cfg)
with_ids = getattr(strategy, "uses_doc_ids", False)
merged = getattr(model, "merged_strategy", "full")
pages = predictor.iter_load(path) if hasattr(predictor, "iter_load") else predictor.load(path)
boxes = getattr(wrapped, "uses_word_boxes", False)
torch_model = getattr(self.backend, "model", None)
'''
    assert [line for line, _ in probes(planted, hooks)] == [2, 4, 5, 6, 7, 8]
    allowed = '''
if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
    pass
code = getattr(getattr(exc, "response", None), "status_code", None)
value = getattr(args, flag)
'''
    assert probes(allowed, hooks) == []


def _attributes_read_on(folder: Path, pattern: re.Pattern) -> dict[str, list[str]]:
    """Attribute name -> where it is read, on objects whose code name matches ``pattern``."""
    out: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and pattern.search(ast.unparse(node.value)):
                out.setdefault(node.attr, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return out


@pytest.mark.parametrize("contract,pattern", [
    ("Task", r"(^|\.)task$"), ("Strategy", r"(^|\.)strategy$"), ("TaskModel", r"^abilities\(.*\)$|^able$"),
])
def test_every_hook_the_orchestration_calls_is_declared(contract, pattern):
    """What train/, inference/, export/ ... read on a task, a strategy or a model's abilities is a member
    of the declared base class (or of its instances' documented attributes), never an undeclared extra."""
    import aetnet.tasks  # noqa: F401
    from aetnet.models.task_model import TaskModel
    from aetnet.strategies.base import Strategy
    from aetnet.tasks.base import Task

    declared = {"Task": Task, "Strategy": Strategy, "TaskModel": TaskModel}[contract]
    read: dict[str, list[str]] = {}
    # serve's ``task`` is an asyncio task: serve calls no aetnet task (a model folder's aetnet.json says it all)
    for folder in [f for f in ORCHESTRATION if not (contract == "Task" and f == "serve")]:
        for name, where in _attributes_read_on(ROOT / "aetnet" / folder, re.compile(pattern)).items():
            read.setdefault(name, []).extend(where)
    assert read, f"no use of {contract} found: the pattern is stale"
    undeclared = {name: where for name, where in read.items() if not hasattr(declared, name)}
    assert not undeclared, f"read on a {contract} but not declared on it: {undeclared}"


# ------------------------------------------------------------------------------------------- defaults
@pytest.fixture(scope="module")
def plain_model(tiny_base):
    from aetnet.strategies.base import load_task_model

    return load_task_model("token", str(tiny_base / "layoutlmv3"), ["O", "B-KEY", "I-KEY"])


def test_a_plain_model_has_the_default_abilities(plain_model, tmp_path):
    from safetensors import safe_open

    from aetnet.models.task_model import TaskModel, abilities

    able = abilities(plain_model)
    assert not isinstance(plain_model, TaskModel)
    assert able.training_only_numel() == (0, 0)
    assert able.optimizer_param_groups(0.01) is None
    assert able.uses_word_boxes is False
    assert able.merged_strategy is None
    with pytest.raises(AetnetError, match="LayoutLMv3ForTokenClassification has no LoRA adapters to merge"):
        able.merge_and_unload()
    able.save_inference(tmp_path)  # save_pretrained: config.json and every weight
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as fh:
        saved = set(fh.keys())
    assert (tmp_path / "config.json").is_file()
    assert saved == set(plain_model.state_dict())


def test_a_lora_model_merges_through_peft(tiny_base, plain_model, tmp_path):
    """LoraTaskModel's merge comes from peft's tuner, not TaskModel's refusing default (which its bases'
    order would otherwise put first)."""
    import copy

    import torch

    from aetnet.config.settings import resolve_config
    from aetnet.data.encoding.processor import load_processor
    from aetnet.inference.modelio import get_strategy, get_task
    from aetnet.models.heads import head_class
    from aetnet.models.task_model import abilities
    from aetnet.strategies.base import BasePaths

    cfg = resolve_config({}, {"task": "funsd", "strategy": "lora", "model": {"base": "tiny"}})
    paths = BasePaths(str(tiny_base / "layoutlmv3"))
    model = get_strategy("lora").build(get_task("funsd"), cfg, paths, ["O", "B-KEY", "I-KEY"],
                                       load_processor(paths.layoutlmv3))
    for name, param in model.named_parameters():  # non-zero adapters, so that merging changes the weights
        if "lora_B" in name:
            torch.nn.init.constant_(param, 0.01)
    able = abilities(model)
    assert able is model and able.merged_strategy == "full"
    before = copy.deepcopy(model.get_base_model().layoutlmv3.encoder.layer[0].attention.self.query)
    merged = able.merge_and_unload()
    assert type(merged) is head_class("token")
    query = merged.layoutlmv3.encoder.layer[0].attention.self.query
    lora = before.lora_B["default"].weight @ before.lora_A["default"].weight * before.scaling["default"]
    torch.testing.assert_close(query.weight, before.base_layer.weight + lora)


def test_a_saved_lora_model_loads_back_mergeable(tiny_base, tmp_path):
    """The lora strategy's ``load`` gives a model whose abilities merge it (what ``export --merge-lora`` asks)."""
    from aetnet.config.settings import resolve_config
    from aetnet.data.encoding.processor import load_processor
    from aetnet.inference.modelio import get_strategy, get_task
    from aetnet.models.heads import head_class
    from aetnet.models.task_model import abilities
    from aetnet.strategies.base import BasePaths

    cfg = resolve_config({}, {"task": "funsd", "strategy": "lora", "model": {"base": "tiny"}})
    paths = BasePaths(str(tiny_base / "layoutlmv3"))
    strategy = get_strategy("lora")
    model = strategy.build(get_task("funsd"), cfg, paths, ["O", "B-KEY", "I-KEY"], load_processor(paths.layoutlmv3))
    abilities(model).save_inference(tmp_path)
    loaded = strategy.load(tmp_path, {"kind": "token"})
    able = abilities(loaded)
    assert able.merged_strategy == "full"
    assert type(able.merge_and_unload()) is head_class("token")


def test_the_base_strategy_defaults(tiny_base, plain_model, tmp_path):
    from aetnet.config.settings import resolve_config
    from aetnet.strategies.base import Strategy

    strategy = Strategy()
    cfg = resolve_config({}, {"task": "funsd", "model": {"base": "tiny"}})
    assert strategy.check_config(cfg) is None
    assert strategy.uses_doc_ids is False
    assert strategy.extra_views(cfg, None) is None
    assert strategy.callbacks(plain_model, cfg) == []
    plain_model.save_pretrained(tmp_path)
    loaded = strategy.load(tmp_path, {"kind": "token"})
    assert type(loaded) is type(plain_model)
    assert loaded.config.id2label == plain_model.config.id2label


# ------------------------------------------------------------------------------------------ task state
def test_a_label_set_found_in_the_data_is_handed_over_by_name(tmp_path):
    """What ``load`` learnt travels as ``data_state`` (explicit fields), not as a copy of the task's vars."""
    import json

    from PIL import Image

    from aetnet.config.settings import resolve_config
    from aetnet.inference.modelio import get_task

    (tmp_path / "img").mkdir()
    Image.new("RGB", (200, 100), "white").save(tmp_path / "img" / "p.png")
    pages = [{"id": f"p{i}", "image": "img/p.png", "words": ["Total:", "12.00"], "boxes": [[10, 10, 50, 20],
              [60, 10, 90, 20]], "labels": ["KEY", "AMOUNT"]} for i in range(4)]
    (tmp_path / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    cfg = resolve_config({"task": "token", "data": {"path": str(tmp_path / "pages.jsonl")}})
    reader = get_task("token")
    reader.load(cfg)
    state = reader.data_state()
    assert state == {"labels": ["O", "B-AMOUNT", "I-AMOUNT", "B-KEY", "I-KEY"]}
    other = get_task("token")  # a process that reads no document
    assert other.label_list() == []
    other.adopt_data_state(state)
    assert other.label_list() == ["O", "B-AMOUNT", "I-AMOUNT", "B-KEY", "I-KEY"]


def test_a_relation_tasks_protocol_is_handed_over():
    from aetnet.config.settings import resolve_config
    from aetnet.inference.modelio import get_task

    cfg = resolve_config({"task": "funsd-re", "relations": {"protocol": "chunks"}})
    reader = get_task("funsd-re")
    reader.use_protocol(cfg)  # what load does first
    other = get_task("funsd-re")
    assert other.relation_meta()["protocol"] != "chunks"
    other.adopt_data_state(reader.data_state())
    assert other.relation_meta()["protocol"] == "chunks"
    assert get_task("funsd").relation_meta() is None  # the default: no relations in aetnet.json
